"""Helpers that read like a user's story: a shop Deployment, a GuardedRollout, and what they show."""

from __future__ import annotations

import json
import secrets
from typing import Any

import kubernetes
import pytest
import requests
from kubernetes.client.rest import ApiException

from testbed import Cluster
from waiting import eventually

GROUP, VERSION, PLURAL = "rollouts.guarded.dev", "v1alpha1", "guardedrollouts"


def shop_deployment(name: str = "shop", replicas: int = 10, image: str = "registry.example/shop:1.0.0") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{
                             "name": "app", "image": image,
                             "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                             "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                         }]}},
        },
    }


def guarded_rollout(name: str, target: str = "shop", image: str = "registry.example/shop:2.0.0",
                    waves: list[dict] | None = None, **spec: Any) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": target},
            "change": {"containers": [{"name": "app", "image": image}]},
            "waves": waves if waves is not None else [
                {"replicas": 1, "bake": "3s"}, {"weight": 10, "bake": "3s"},
                {"weight": 50, "bake": "3s"}, {"weight": 100, "bake": "3s"},
            ],
            **spec,
        },
    }


class Shop:
    """One namespace's view: the target, its canary, and a GuardedRollout."""

    def __init__(self, cluster: Cluster, namespace: str, name: str = "shop") -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.apps = kubernetes.client.AppsV1Api(cluster.api())
        self.custom = kubernetes.client.CustomObjectsApi(cluster.api())
        self.core = kubernetes.client.CoreV1Api(cluster.api())

    def deploy(self, replicas: int = 10) -> None:
        self.apps.create_namespaced_deployment(self.namespace, shop_deployment(self.name, replicas))
        eventually(lambda: self.ready(self.name) == replicas, timeout=90, what=f"{replicas} ready {self.name} pods")

    def deployment(self, name: str) -> Any:
        try:
            return self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ready(self, name: str) -> int:
        d = self.deployment(name)
        return (d.status.ready_replicas or 0) if d is not None else 0

    def image(self) -> str:
        return self.deployment(self.name).spec.template.spec.containers[0].image

    def create_rollout(self, body: dict) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def rollout(self, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict:
        obj = self.rollout(name)
        return (obj or {}).get("status") or {}

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict:
        def probe() -> dict | None:
            st = self.status(name)
            return st if st.get("phase") == phase else None
        try:
            return eventually(probe, timeout=timeout, interval=0.3, what=f"phase {phase}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {json.dumps(self.status(name), indent=1)[:3000]}\n"
                                 f"{self.describe()}") from None

    def describe(self) -> str:
        """What the cluster shows, for failure messages."""
        lines = []
        for d in self.apps.list_namespaced_deployment(self.namespace).items:
            s = d.status
            lines.append(f"deployment {d.metadata.name}: spec {d.spec.replicas} ready {s.ready_replicas} "
                         f"updated {s.updated_replicas} available {s.available_replicas} replicas {s.replicas} "
                         f"gen {d.metadata.generation}/{s.observed_generation} "
                         f"deleting {d.metadata.deletion_timestamp}")
        for p in self.core.list_namespaced_pod(self.namespace).items:
            lines.append(f"pod {p.metadata.name}: {p.status.phase} node {p.spec.node_name} "
                         f"deleting {p.metadata.deletion_timestamp}")
        return "\n".join(lines)

    def request(self, name: str, action: str) -> str:
        request_id = secrets.token_hex(4)
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name,
            {"metadata": {"annotations": {f"{GROUP}/request": json.dumps({"id": request_id, "action": action})}}},
        )
        return request_id

    def pod_images(self) -> list[str]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"app={self.name}").items
        return sorted(p.spec.containers[0].image for p in pods if p.metadata.deletion_timestamp is None)

    def events(self, name: str) -> list[Any]:
        return [e for e in self.core.list_namespaced_event(self.namespace).items
                if e.involved_object.kind == "GuardedRollout" and e.involved_object.name == name]


SIM_ANNOTATIONS = {"sim.guarded.dev/enabled": "true", "sim.guarded.dev/rps": "300"}


def simulated_shop(name: str = "shop", replicas: int = 10) -> dict:
    """The shop as the traffic simulator serves it: 300 req/s over its ready pods, 5% order, 0.5% fail."""
    d = shop_deployment(name, replicas)
    d["spec"]["template"]["metadata"]["annotations"] = dict(SIM_ANNOTATIONS)
    return d


def serving_shop(cluster: Cluster, namespace: str, body: dict | None = None) -> Shop:
    """A simulated shop (`body`, default simulated_shop()) with all its pods Ready and a pre-rollout baseline
    of its traffic in Prometheus: where a test judges metrics, it starts here."""
    if cluster.prometheus_url is None:
        pytest.skip("needs a Prometheus that scrapes the traffic simulator (GUARDED_TEST_PROMETHEUS_URL)")
    body = body or simulated_shop()
    shop, name, replicas = Shop(cluster, namespace), body["metadata"]["name"], body["spec"]["replicas"]
    shop.apps.create_namespaced_deployment(namespace, body)
    eventually(lambda: shop.ready(name) == replicas, timeout=90, what=f"{replicas} ready {name} pods")
    eventually(lambda: prometheus_has_traffic(cluster, namespace), timeout=60, what=f"{name} traffic in Prometheus")
    return shop


def behaviour_change(**annotations: str) -> dict:
    """A change whose pods behave differently in the simulator (a bad release is just this)."""
    return {"metadata": {"annotations": {f"sim.guarded.dev/{k.replace('_', '-')}": v
                                          for k, v in annotations.items()}}}


ANALYSIS = {"interval": "2s", "requests": "http_requests_total", "orders": "orders_total",
            "falseRollbackRate": 0.001, "maxInconclusive": 30, "preRolloutWindow": "5m"}


def prometheus_has_traffic(cluster: Cluster, namespace: str, at_least: int = 500) -> bool:
    """The simulator's counters for this namespace are in Prometheus: a pre-rollout baseline exists (of at
    least `at_least` requests and some orders over the last minute)."""
    def total(metric: str) -> float:
        r = requests.get(f"{cluster.prometheus_url}/api/v1/query", timeout=5, params={
            "query": f'sum(increase({metric}{{namespace="{namespace}"}}[1m]))'})
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0
    return total("http_requests_total") > at_least and (at_least <= 500 or total("orders_total") > at_least / 40)
