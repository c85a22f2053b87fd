# The operator's image: `guarded-operator` as a non-root user on python:3.11-slim.
# Build: docker build -t guarded-rollouts:0.1.0 .   (docs/install.md; not built in this repo's CI,
# which has no Docker engine). Without Docker: `make image` builds the same image from Debian's tools
# (hack/image.sh, docs/image.md)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin guarded
# Numeric, so that the kubelet can check runAsNonRoot without resolving the name.
USER 10001:10001
# 8080: kopf's liveness (/healthz); 8081: /metrics and /readyz (GUARDED_METRICS_LISTEN).
EXPOSE 8080 8081
ENTRYPOINT ["guarded-operator"]
