#!/usr/bin/env bash
# The operator's image without a Docker engine, from Debian's own tools (docs/image.md).
#
#   hack/image.sh build   a Debian bookworm root file system (mmdebstrap, minbase) with python3, the
#                         project's wheel and its dependencies in /opt/guarded, as an OCI image (umoci)
#                         in $GUARDED_CACHE/image/oci, tag $IMAGE_TAG; digest and size in build.json
#   hack/image.sh run     that image as the in-cluster operator against the test bed: runc (or
#                         $IMAGE_RUNTIME=crun) on the unpacked bundle, host network, a real ServiceAccount
#                         token; creates a GuardedRollout, waits for Succeeded, then removes everything
#                         it made. Run it under the test bed lock:
#                           flock /tmp/guarded-testbed.lock hack/image.sh run
#
# Needs root and the Debian packages mmdebstrap, umoci, runc (or crun), jq (installed if missing).
# Mirrors: the host's own apt sources, so the image gets the packages this machine would.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GUARDED_CACHE:-$HOME/.cache/guarded-rollouts}/image"
OCI="$CACHE/oci"
IMAGE_TAG="${IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")}"
RUNTIME="${IMAGE_RUNTIME:-runc}"  # crun 1.8.1 refuses this host's hybrid cgroups (docs/image.md)
PY="${PY:-$ROOT/.venv/bin/python}"
SUITE=bookworm   # its python3 is 3.11, the Dockerfile's python:3.11-slim
UID_GID=10001    # the Dockerfile's and the Deployment's runAsUser

log() { echo "[image] $*" >&2; }
# Commands inside the image's root file system see none of the host's environment (PIP_*, PYTHON*).
in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

need_tools() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

host_sources() {  # the host's apt sources (deb822 or one-line), handed to mmdebstrap as they are
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -s "$f" ]] && grep -qE "^(Suites:.*\b$SUITE\b|deb .* $SUITE )" "$f" && echo "$f"
  done
  return 0
}

revision() {  # the commit; "-dirty" when the sources copied into the image differ from it
  local rev; rev="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null)" || { echo unknown; return; }
  [[ -z "$(git -C "$ROOT" status --porcelain -- operator pyproject.toml README.md)" ]] || rev+="-dirty"
  echo "$rev"
}

build() {
  need_tools mmdebstrap umoci jq
  local start
  start=$(date +%s)
  mkdir -p "$CACHE"
  work="$(mktemp -d "$CACHE/build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  rootfs="$work/rootfs"

  log "wheels: the project (as the Dockerfile copies it) and its dependencies"
  mkdir -p "$work/src" "$work/wheels"
  cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/operator" "$work/src/"
  find "$work/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
  "$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$work/wheels" "$work/src" 2>"$work/wheel.log" \
    || { cat "$work/wheel.log" >&2; exit 1; }

  log "root file system: Debian $SUITE minbase with python3"
  mapfile -t sources < <(host_sources)
  ((${#sources[@]})) || { log "no apt source for $SUITE in /etc/apt"; exit 1; }
  SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)" \
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$rootfs" "${sources[@]}"

  log "the operator in /opt/guarded (a venv of the image's own python3), user $UID_GID"
  mkdir "$rootfs/wheels" && cp "$work"/wheels/*.whl "$rootfs/wheels/"
  in_root /usr/bin/python3 -m venv /opt/guarded
  in_root /opt/guarded/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check \
    --find-links /wheels guarded-rollouts
  in_root /opt/guarded/bin/pip uninstall -q -y --disable-pip-version-check pip setuptools
  in_root useradd --uid "$UID_GID" --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin guarded
  rm -rf "$rootfs/wheels" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
    "$rootfs"/var/cache/ldconfig/aux-cache
  in_root /opt/guarded/bin/guarded-operator --help >/dev/null  # the entry point imports and parses

  log "OCI image $OCI:$IMAGE_TAG"
  rm -rf "$OCI"
  umoci init --layout "$OCI"
  umoci new --image "$OCI:$IMAGE_TAG"
  umoci insert --image "$OCI:$IMAGE_TAG" --history.created_by "hack/image.sh build" "$rootfs" /
  umoci config --image "$OCI:$IMAGE_TAG" --author "guarded-rollouts hack/image.sh" \
    --config.user "$UID_GID:$UID_GID" --config.workingdir / \
    --config.entrypoint /opt/guarded/bin/guarded-operator \
    --config.env PATH=/opt/guarded/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
    --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
    --config.label org.opencontainers.image.title=guarded-rollouts \
    --config.label "org.opencontainers.image.version=$IMAGE_TAG" \
    --config.label "org.opencontainers.image.revision=$(revision)"
  umoci gc --layout "$OCI"

  local digest manifest blobs rootfs_bytes
  digest="$(jq -r --arg t "$IMAGE_TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$OCI/index.json")"
  manifest="$OCI/blobs/${digest/://}"
  blobs="$(jq '[.config.size] + [.layers[].size] | add' "$manifest")"
  rootfs_bytes="$(du -sb "$rootfs" | cut -f1)"
  jq -n --arg tag "$IMAGE_TAG" --arg digest "$digest" --argjson compressed "$blobs" \
    --argjson unpacked "$rootfs_bytes" --argjson seconds "$(( $(date +%s) - start ))" \
    --arg python "$(in_root /usr/bin/python3 --version)" \
    --argjson wheels "$(ls "$work"/wheels/*.whl | wc -l)" \
    '{tag: $tag, manifest_digest: $digest, compressed_bytes: $compressed, unpacked_bytes: $unpacked,
      build_seconds: $seconds, python: $python, wheels: $wheels}' | tee "$CACHE/build.json"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WEBHOOK_CONFIGURATION=guarded-rollouts.rollouts.guarded.dev  # kopf's managed webhooks (tests/operator_process.py)
SA_NAMESPACE=guarded-rollouts SA_NAME=guarded-operator          # manifests/install

cleanup_run() {
  set +e
  # The demo namespace first, while the operator still runs: it removes its finalizer from the rollout.
  [[ -n "${demo_ns:-}" ]] && kubectl delete namespace "$demo_ns" --ignore-not-found --wait=true --timeout=90s >/dev/null
  if [[ -n "${container:-}" ]]; then
    log "stopping the container"
    "$RUNTIME" kill "$container" TERM 2>/dev/null
    for _ in $(seq 30); do "$RUNTIME" state "$container" 2>/dev/null | grep -q '"running"' || break; sleep 0.5; done
    "$RUNTIME" delete --force "$container" 2>/dev/null
    wait 2>/dev/null
  fi
  for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
    kubectl delete "$kind" "$WEBHOOK_CONFIGURATION" --ignore-not-found >/dev/null
  done
  [[ "${made_sa_namespace:-}" == 1 ]] && kubectl delete namespace "$SA_NAMESPACE" --ignore-not-found --wait=false >/dev/null
  [[ -n "${work:-}" ]] && { cp "$work/operator.log" "$CACHE/run-operator.log" 2>/dev/null; rm -rf "$work"; }
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail naming WHAT
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! "$RUNTIME" state "$container" 2>/dev/null | grep -q '"running"'; then
      log "the container stopped while waiting for $what:"; tail -40 "$work/operator.log" >&2; return 1
    fi
    ((SECONDS < deadline)) || { log "no $what after ${seconds}s:"; tail -40 "$work/operator.log" >&2; return 1; }
    sleep 0.5
  done
}

webhooks_point_here() {
  kubectl get mutatingwebhookconfiguration "$WEBHOOK_CONFIGURATION" -o 'jsonpath={.webhooks[*].clientConfig.url}' \
    | grep -q ":$webhook_port/"
}

phase() { kubectl -n "$demo_ns" get guardedrollout release -o 'jsonpath={.status.phase}'; }
settled() { [[ "$(phase)" =~ ^(Succeeded|RolledBack|Blocked|Failed)$ ]]; }

run() {
  need_tools umoci jq "$RUNTIME"
  [[ -f "$OCI/index.json" ]] || { log "no image in $OCI: run $0 build first"; exit 1; }
  "$ROOT/hack/testbed.sh" up >&2
  eval "$("$ROOT/hack/testbed.sh" env)"
  mkdir -p "$CACHE"
  work="$(mktemp -d "$CACHE/run.XXXXXX")"
  trap cleanup_run EXIT

  local server host port sa
  server="$(kubectl config view --minify -o 'jsonpath={.clusters[0].cluster.server}')"
  host="${server#https://}"; port="${host##*:}"; host="${host%:*}"
  log "the operator's identity: ServiceAccount $SA_NAMESPACE/$SA_NAME with manifests/base's RBAC"
  kubectl apply -k "$ROOT/manifests/base" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s crd/guardedrollouts.rollouts.guarded.dev >/dev/null
  kubectl get namespace "$SA_NAMESPACE" >/dev/null 2>&1 || made_sa_namespace=1
  kubectl apply -f "$ROOT/manifests/install/namespace.yaml" -f "$ROOT/manifests/install/serviceaccount.yaml" >/dev/null
  # What the kubelet projects into a pod: a bound token, the cluster's CA and the namespace.
  sa="$work/serviceaccount"; mkdir -m 0755 "$sa"
  kubectl -n "$SA_NAMESPACE" create token "$SA_NAME" --duration=1h | tr -d "\n" > "$sa/token"
  kubectl config view --minify --raw -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$sa/ca.crt"
  printf %s "$SA_NAMESPACE" > "$sa/namespace"
  chmod 0644 "$sa"/*

  log "bundle: umoci unpack of $OCI:$IMAGE_TAG"
  umoci unpack --image "$OCI:$IMAGE_TAG" "$work/bundle" >/dev/null
  local health_port metrics_port
  health_port="$(free_port)"; metrics_port="$(free_port)"; webhook_port="$(free_port)"
  # As the Deployment runs it: no capabilities, no privilege escalation, a read-only root with a
  # writable /tmp; the host's network (the API server listens on its loopback), in-cluster config.
  jq --arg sa "$sa" --arg host "$host" --arg port "$port" --arg prom "${GUARDED_PROMETHEUS_URL:-}" \
    --arg health "http://127.0.0.1:$health_port/healthz" --arg metrics "127.0.0.1:$metrics_port" \
    --arg webhook "127.0.0.1:$webhook_port" '
    .process.terminal = false
    | .process.args += ["--liveness", $health, "--metrics-listen", $metrics, "--webhook-listen", $webhook,
                        "--prometheus-url", $prom]
    | .process.env += ["KUBERNETES_SERVICE_HOST=" + $host, "KUBERNETES_SERVICE_PORT=" + $port]
    | .process.capabilities = {bounding: [], effective: [], inheritable: [], permitted: [], ambient: []}
    | .process.noNewPrivileges = true
    | .root.readonly = true
    | .hostname = "guarded-operator"
    | .linux.namespaces |= map(select(.type != "network"))
    | .mounts += [
        {destination: "/var/run/secrets/kubernetes.io/serviceaccount", type: "bind", source: $sa,
         options: ["rbind", "ro", "nosuid", "nodev", "noexec"]},
        {destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", "size=64m"]}]
    ' "$work/bundle/config.json" > "$work/config.json" && mv "$work/config.json" "$work/bundle/config.json"

  container="guarded-image-$$"
  log "$RUNTIME $("$RUNTIME" --version | head -1 | awk '{print $NF}'): run $container"
  local started; started=$SECONDS
  "$RUNTIME" run --bundle "$work/bundle" "$container" > "$work/operator.log" 2>&1 < /dev/null &
  sleep 1
  wait_for 60 "liveness" curl -sf "http://127.0.0.1:$health_port/healthz"
  wait_for 60 "readiness" curl -sf "http://127.0.0.1:$metrics_port/readyz"
  wait_for 60 "webhooks pointing at the container" webhooks_point_here
  local ready_seconds=$((SECONDS - started))
  log "healthy, ready and serving the webhooks after ${ready_seconds}s"

  demo_ns="guarded-image-$(date +%s)"
  kubectl create namespace "$demo_ns" >/dev/null
  kubectl -n "$demo_ns" apply -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, labels: {app: shop}}
spec:
  replicas: 4
  selector: {matchLabels: {app: shop}}
  strategy: {rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
        - name: app
          image: registry.example/shop:1.0.0
          resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 64Mi}}
          readinessProbe: {httpGet: {path: /ready, port: 8080}}
YAML
  kubectl -n "$demo_ns" rollout status deployment/shop --timeout=90s >/dev/null
  log "GuardedRollout $demo_ns/release: shop 1.0.0 -> 2.0.0 in three waves"
  local rollout_started; rollout_started=$SECONDS
  kubectl -n "$demo_ns" apply -f - >/dev/null <<'YAML'
apiVersion: rollouts.guarded.dev/v1alpha1
kind: GuardedRollout
metadata: {name: release}
spec:
  target: {name: shop}
  change: {containers: [{name: app, image: registry.example/shop:2.0.0}]}
  waves: [{replicas: 1, bake: 2s}, {weight: 50, bake: 2s}, {weight: 100, bake: 2s}]
YAML
  wait_for 180 "settled phase" settled
  local rollout_seconds=$((SECONDS - rollout_started)) image
  if [[ "$(phase)" != Succeeded ]]; then
    log "the rollout ended $(phase), not Succeeded:"
    kubectl -n "$demo_ns" get guardedrollout release -o 'jsonpath={.status}' >&2; echo >&2; exit 1
  fi
  image="$(kubectl -n "$demo_ns" get deployment shop -o 'jsonpath={.spec.template.spec.containers[0].image}')"
  kubectl -n "$demo_ns" get guardedrollout release \
    -o 'jsonpath={range .status.history[*]}{.reason}{" wave="}{.wave}{"\n"}{end}' >&2
  log "Succeeded after ${rollout_seconds}s; shop runs $image"
  # Who the operator is, as the API server told it (SelfSubjectReview at start-up), and who wrote the rollout.
  local identity authors waves
  identity="$(grep -m1 '"guarding workloads as"' "$work/operator.log" | jq -r .operator)"
  authors="$(kubectl -n "$demo_ns" get guardedrollout release -o 'jsonpath={.metadata.annotations.rollouts\.guarded\.dev/authors}')"
  waves="$(kubectl -n "$demo_ns" get guardedrollout release -o json | jq -c '[.status.history[] | select(.reason == "WaveStarted") | .wave]')"
  jq -n --arg runtime "$RUNTIME $("$RUNTIME" --version | head -1 | awk '{print $NF}')" \
    --arg digest "$(jq -r '.manifests[0].digest' "$OCI/index.json")" --arg image "$image" \
    --argjson ready "$ready_seconds" --argjson rollout "$rollout_seconds" --arg identity "$identity" \
    --argjson authors "${authors:-null}" --argjson waves "$waves" \
    '{runtime: $runtime, image_digest: $digest, operator_identity: $identity, ready_seconds: $ready,
      phase: "Succeeded", waves_started: $waves, rollout_seconds: $rollout, target_image_after: $image,
      rollout_authors: $authors}' | tee "$CACHE/run.json"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
