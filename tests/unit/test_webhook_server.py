"""In a cluster the API server reaches the webhooks through a Service reference, not a URL it cannot resolve."""

from __future__ import annotations

import pytest

from guarded.handlers.webhook_server import as_service, service_of


@pytest.mark.parametrize(("host", "expected"), [
    ("guarded-rollouts-webhook.guarded-rollouts.svc", ("guarded-rollouts", "guarded-rollouts-webhook")),
    ("hook.ops.svc.cluster.local", ("ops", "hook")),
    ("hook.ops.svc.cluster.local.", ("ops", "hook")),
    ("127.0.0.1", None),
    ("localhost", None),
    ("hook.example.com", None),
    ("hook.ops.svc.example.com", None),
    (".ops.svc", None),
])
def test_a_services_cluster_dns_name_and_nothing_else_is_a_service(host: str, expected: tuple | None) -> None:
    assert service_of(host) == expected


def test_the_registered_config_names_the_service_keeps_the_ca_and_lets_kopf_add_the_handler_path() -> None:
    config = as_service({"url": "https://hook.ops.svc:9443", "caBundle": "Q0E="}, "ops", "hook", 9443)
    assert config == {"service": {"namespace": "ops", "name": "hook", "port": 9443, "path": ""},
                      "caBundle": "Q0E="}
    with_path = as_service({"url": "https://hook.ops.svc:9443/hooks/"}, "ops", "hook", 9443)
    assert with_path["service"]["path"] == "/hooks" and "caBundle" not in with_path
