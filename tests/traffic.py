"""The simulated shop's traffic as Prometheus sees it: a namespace that serves it, what its pods
took, and the orders a change lost. Shared by bench/detection.py and the demo (hack/demo.py).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import kubernetes
import requests

from rollouts import Shop, simulated_shop
from testbed import Cluster
from waiting import eventually

# What the simulator's shop does when no annotation says otherwise (guarded.sim.model).
BASE_ORDER_RATIO = 0.05
BASE_ERROR_RATIO = 0.005


def prom(cluster: Cluster, query: str, at: float | None = None) -> float:
    """One instant value (0 when the query selects nothing)."""
    params = {"query": query}
    if at is not None:
        params["time"] = f"{at:.3f}"
    r = requests.get(f"{cluster.prometheus_url}/api/v1/query", params=params, timeout=10)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def prom_range(cluster: Cluster, query: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
    """Every series of a range query: [{"metric": {labels}, "values": [(unix time, value), ...]}]."""
    r = requests.get(f"{cluster.prometheus_url}/api/v1/query_range", timeout=30, params={
        "query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    r.raise_for_status()
    return [{"metric": s["metric"], "values": [(float(t), float(v)) for t, v in s["values"]]}
            for s in r.json()["data"]["result"]]


def lost_orders(cluster: Cluster, namespace: str, pods: str, start: float, end: float) -> dict:
    """Orders the selected pods should have taken at the baseline ratio, minus those they took."""
    window = max(1, round(end - start))
    sel = f'namespace="{namespace}",pod=~"{pods}"'
    reqs = prom(cluster, f"sum(increase(http_requests_total{{{sel}}}[{window}s]))", at=end)
    orders = prom(cluster, f"sum(increase(orders_total{{{sel}}}[{window}s]))", at=end)
    expected = reqs * BASE_ORDER_RATIO * (1 - BASE_ERROR_RATIO)  # orders come from successful requests
    return {"requests": round(reqs, 1), "orders": round(orders, 1), "expected_orders": round(expected, 1),
            "orders_lost": round(max(expected - orders, 0.0), 1), "window_seconds": window}


def shop_with_traffic(cluster: Cluster, *, prefix: str = "bench", deployment: dict | None = None,
                      labels: dict[str, str] | None = None) -> tuple[Shop, str]:
    """A new namespace whose 10-pod shop serves 300 req/s, once Prometheus holds 20 s of it."""
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    kubernetes.client.CoreV1Api(cluster.api()).create_namespace(
        {"metadata": {"name": namespace, "labels": labels or {"guarded.dev/test": "true"}}})
    shop = Shop(cluster, namespace)
    body = deployment or simulated_shop()
    replicas = body["spec"]["replicas"]
    shop.apps.create_namespaced_deployment(namespace, body)
    eventually(lambda: shop.ready("shop") == replicas, timeout=120, what=f"{replicas} ready pods")
    eventually(lambda: prom(cluster, f'sum(increase(http_requests_total{{namespace="{namespace}"}}[20s]))') > 3000,
               timeout=90, what="20 s of traffic in Prometheus")
    return shop, namespace


def first_ready(shop: Shop, name: str) -> float:
    """When the Deployment `name` first has a Ready pod (polled every 0.1 s)."""
    eventually(lambda: shop.ready(name) >= 1, timeout=120, interval=0.1, what=f"{name} ready")
    return time.time()


def delete_namespace(cluster: Cluster, namespace: str) -> None:
    kubernetes.client.CoreV1Api(cluster.api()).delete_namespace(namespace, propagation_policy="Background")
