"""How the operator logs in: in a pod from its ServiceAccount token, outside a cluster from a kubeconfig."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest

from guarded.handlers import operator as handlers


def test_in_a_pod_kopf_gets_the_service_account_token_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The in-cluster loader keeps it as "bearer <token>" (lowercase); kopf adds "Bearer " itself.
    (tmp_path / "token").write_text("eyJhbGciOi.token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    info = handlers.login()

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
