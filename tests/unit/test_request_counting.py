"""What the operator sends is counted: Kubernetes requests by verb and resource, Prometheus queries by kind,
and both per reconcile, also when the request is sent from a worker thread (run_blocking)."""

from __future__ import annotations

import asyncio

import pytest

from guarded.handlers.telemetry import Telemetry
from guarded.kube.client import classify, run_blocking


@pytest.mark.parametrize("method, url, expected", [
    ("GET", "https://k:6443/apis/apps/v1/namespaces/shop/deployments/shop", ("get", "deployments")),
    ("GET", "https://k:6443/apis/apps/v1/namespaces/shop/deployments", ("list", "deployments")),
    ("GET", "https://k:6443/api/v1/pods?watch=true&resourceVersion=1", ("watch", "pods")),
    ("GET", "https://k:6443/api/v1/namespaces/shop", ("get", "namespaces")),
    ("GET", "https://k:6443/api/v1/namespaces", ("list", "namespaces")),
    ("PUT", "https://k:6443/apis/rollouts.guarded.dev/v1alpha1/namespaces/shop/guardedrollouts/r/status",
     ("update", "guardedrollouts/status")),
    ("PATCH", "https://k:6443/apis/rollouts.guarded.dev/v1alpha1/namespaces/shop/guardedrollouts/r/status",
     ("patch", "guardedrollouts/status")),
    ("POST", "https://k:6443/api/v1/namespaces/shop/events", ("create", "events")),
    ("DELETE", "https://k:6443/apis/apps/v1/namespaces/shop/deployments/shop-canary", ("delete", "deployments")),
    ("GET", "https://k:6443/apis/rollouts.guarded.dev/v1alpha1/rolloutpolicies", ("list", "rolloutpolicies")),
    ("GET", "https://k:6443/version", ("get", "/version")),
])
def test_a_request_is_named_as_the_api_servers_metrics_name_it(method: str, url: str,
                                                                expected: tuple[str, str]) -> None:
    assert classify(method, url) == expected


def sample(t: Telemetry, name: str, **labels: str) -> float:
    return next((s.value for f in t.registry.collect() for s in f.samples
                 if s.name == name and s.labels == labels), 0.0)


def test_what_a_reconcile_sends_from_worker_threads_is_counted_for_it() -> None:
    t = Telemetry()

    async def one_reconcile() -> None:
        with t.reconciling():
            await run_blocking(t.api_request, "get", "deployments")
            await run_blocking(t.api_request, "update", "guardedrollouts/status")
            await run_blocking(t.metric_query, "range")

    asyncio.run(one_reconcile())
    t.api_request("list", "pods")  # outside any reconcile: counted in the totals only
    assert sample(t, "guarded_kubernetes_api_requests_total", verb="get", resource="deployments") == 1
    assert sample(t, "guarded_kubernetes_api_requests_total", verb="list", resource="pods") == 1
    assert sample(t, "guarded_metric_queries_total", kind="range") == 1
    assert sample(t, "guarded_reconcile_api_requests_sum") == 2
    assert sample(t, "guarded_reconcile_api_requests_count") == 1
    assert sample(t, "guarded_reconcile_metric_queries_sum") == 1


def test_the_client_tells_its_observer_of_each_request_it_sends() -> None:
    import kubernetes

    from guarded.kube.client import KubeClient

    seen: list[tuple[str, str]] = []
    api = kubernetes.client.ApiClient()

    def refused(*_: object, **__: object) -> None:
        raise ConnectionRefusedError("nothing listens")

    api.rest_client.pool_manager.request = refused  # the request is counted, then fails
    client = KubeClient(api, observer=lambda verb, resource: seen.append((verb, resource)))
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(client.get_deployment("shop", "shop"))
    assert seen[:1] == [("get", "deployments")]
