"""How the operator logs in: in a pod from its ServiceAccount token, outside a cluster from a kubeconfig."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kubernetes
import pytest

from guarded.handlers import connection as handlers


def test_in_a_pod_kopf_gets_the_service_account_token_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The in-cluster loader keeps it as "bearer <token>" (lowercase); kopf adds "Bearer " itself.
    (tmp_path / "token").write_text("eyJhbGciOi.token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    info = handlers.connection_info()

    assert info.token == "eyJhbGciOi.token"
    assert info.server == "https://10.96.0.1:443"
    assert info.ca_path == str(tmp_path / "ca.crt")


def test_from_a_kubeconfig_kopf_gets_its_token_alone() -> None:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config_from_dict({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:16443"}}],
        "users": [{"name": "u", "user": {"token": "abc.def"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }, client_configuration=cfg)

    assert handlers.bearer_token(cfg) == "abc.def"


def test_a_client_certificate_login_has_no_token() -> None:
    assert handlers.bearer_token(kubernetes.client.Configuration()) is None


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text("""
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:16443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: abc.def}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
""")
    return path


@pytest.mark.parametrize(("watched", "limit"), [("", 64), ("team-a,team-b", 96)])
def test_kopf_talks_through_a_session_with_a_bounded_number_of_connections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watched: str, limit: int) -> None:
    """kopf's own session opens a connection per request in flight, without a limit: a thousand at once at
    N = 1,000 rollouts. Each namespace an operator is limited to adds room for its watches."""
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(_kubeconfig(tmp_path)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("GUARDED_WATCHED_NAMESPACES", watched)

    async def log_in() -> tuple[str, int, str | None]:
        context = await handlers.login()
        session = context.aiohttp_session
        try:
            return context.server, session.connector.limit, session.headers.get("Authorization")
        finally:
            await session.close()

    server, connections, authorization = asyncio.run(log_in())
    assert server == "https://127.0.0.1:16443"
    assert connections == limit == handlers.kopf_connection_limit(len([n for n in watched.split(",") if n]))
    assert authorization == "Bearer abc.def"
