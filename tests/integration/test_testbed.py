"""The test bed is a real cluster: controllers, scheduler, kwok nodes, RBAC, and a real Prometheus."""

from __future__ import annotations

import http.server
import secrets
import socket
import threading

import kubernetes
import pytest
import requests
from kubernetes.client.rest import ApiException

from rollouts import shop_deployment
from testbed import Cluster
from waiting import eventually


def deployment(name: str, replicas: int, image: str) -> dict:
    d = shop_deployment(name, replicas, image)
    d["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return d


def test_deployment_pods_become_ready_and_a_rolling_update_completes(cluster: Cluster, namespace: str) -> None:
    apps = kubernetes.client.AppsV1Api(cluster.api())
    core = kubernetes.client.CoreV1Api(cluster.api())
    apps.create_namespaced_deployment(namespace, deployment("shop", 5, "registry.example/shop:1.0.0"))

    def ready() -> int | None:
        status = apps.read_namespaced_deployment_status("shop", namespace).status
        return status.ready_replicas if status.ready_replicas == 5 and status.available_replicas == 5 else None

    assert eventually(ready, timeout=90, what="5 ready replicas") == 5
    pods = core.list_namespaced_pod(namespace, label_selector="app=shop").items
    assert len(pods) == 5
    assert all(p.spec.node_name and p.spec.node_name.startswith("kwok-node-") for p in pods)
    assert all(p.status.phase == "Running" for p in pods)

    apps.patch_namespaced_deployment(
        "shop", namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/shop:1.1.0"}]}}}},
    )

    def rolled_out() -> bool:
        d = apps.read_namespaced_deployment_status("shop", namespace)
        s = d.status
        done = (
            s.observed_generation == d.metadata.generation
            and s.updated_replicas == 5 and s.available_replicas == 5 and s.replicas == 5
        )
        if not done:
            return False
        running = [p for p in core.list_namespaced_pod(namespace, label_selector="app=shop").items
                   if p.metadata.deletion_timestamp is None]
        return len(running) == 5 and {p.spec.containers[0].image for p in running} == {"registry.example/shop:1.1.0"}

    assert eventually(rolled_out, timeout=120, what="the rolling update to 1.1.0 to complete")


def test_rbac_denies_alice_what_it_allows_admin(cluster: Cluster, namespace: str) -> None:
    secret = kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name="db"), string_data={"pw": "x"})
    with pytest.raises(ApiException) as denied:
        kubernetes.client.CoreV1Api(cluster.api("alice")).create_namespaced_secret(namespace, secret)
    assert denied.value.status == 403
    assert "alice" in denied.value.body

    created = kubernetes.client.CoreV1Api(cluster.api("admin")).create_namespaced_secret(namespace, secret)
    assert created.metadata.name == "db"


def test_the_api_server_knows_who_each_user_is(cluster: Cluster) -> None:
    for user, expected_groups in [("alice", {"engineers"}), ("carol", {"senior-engineers"})]:
        review = kubernetes.client.AuthenticationV1Api(cluster.api(user)).create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview()
        )
        info = review.status.user_info
        assert info.username == user
        assert expected_groups <= set(info.groups)


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_prometheus_scrapes_a_target_the_test_starts(cluster: Cluster) -> None:
    if cluster.testbed_dir is None:
        pytest.skip("adding scrape targets needs the local test bed's Prometheus (file-based discovery)")
    value = secrets.randbelow(10_000) + 1
    handler = type("Handler", (_Metrics,), {"body": f"guarded_testbed_probe {value}\n".encode()})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"probe-{secrets.token_hex(3)}"
    cluster.add_scrape_target(target, f"127.0.0.1:{port}", {"probe": target})
    try:
        def scraped() -> float | None:
            r = requests.get(f"{cluster.prometheus_url}/api/v1/query",
                             params={"query": f'guarded_testbed_probe{{probe="{target}"}}'}, timeout=5)
            r.raise_for_status()
            result = r.json()["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        assert eventually(scraped, timeout=60, what="Prometheus to scrape the probe") == value
    finally:
        cluster.remove_scrape_target(target)
        server.shutdown()
