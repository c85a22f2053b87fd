"""The traffic simulator against the real test bed: Ready pods get traffic that Prometheus scrapes and sees."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import requests

from rollouts import shop_deployment
from testbed import ROOT, Cluster
from waiting import eventually


@dataclass
class Simulator:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        r = requests.get(f"{self.url}/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def simulator(cluster: Cluster) -> Iterator[Simulator]:
    port = _free_port()
    log_path = Path(tempfile.mkdtemp(prefix="guarded-sim-")) / "sim.log"
    args = [sys.executable, "-m", "guarded.sim.main", "--kubeconfig", cluster.kubeconfig, "--port", str(port),
            "--listen", "127.0.0.1", "--seed", "1", "--tick", "0.5"]
    context = cluster.context_for("admin")
    if context:
        args += ["--context", context]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    sim = Simulator(port, proc, log_path)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"simulator exited with {proc.returncode}:\n{sim.tail()}"
            try:
                return requests.get(f"{sim.url}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        eventually(healthy, timeout=60, interval=0.2, what="the simulator's /healthz")
        yield sim
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def deployment(name: str, replicas: int, rps: int) -> dict:
    d = shop_deployment(name, replicas)
    d["spec"]["template"]["metadata"]["annotations"] = {"sim.guarded.dev/enabled": "true",
                                                        "sim.guarded.dev/rps": str(rps)}
    return d


def test_simulated_traffic_reaches_prometheus_and_follows_the_pods(
        cluster: Cluster, namespace: str, simulator: Simulator) -> None:
    if cluster.testbed_dir is None:
        pytest.skip("adding scrape targets needs the local test bed's Prometheus (file-based discovery)")
    apps = kubernetes.client.AppsV1Api(cluster.api())
    apps.create_namespaced_deployment(namespace, deployment("shop", 3, rps=60))
    ready_line = f'sim_ready_pods{{app="shop",namespace="{namespace}"}} 3.0'
    eventually(lambda: ready_line in simulator.metrics(), timeout=90, what="the simulator to see 3 Ready pods")

    target = f"sim-{secrets.token_hex(3)}"
    cluster.add_scrape_target(target, f"127.0.0.1:{simulator.port}", {"sim": target})
    try:
        def query(promql: str) -> float | None:
            r = requests.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
            r.raise_for_status()
            result = r.json()["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        selector = f'namespace="{namespace}",sim="{target}"'
        rate = f"sum(rate(http_requests_total{{{selector}}}[10s]))"

        def rate_near_60() -> float | None:
            value = query(rate)
            # Scraped for well over the window, so that rate() does not extrapolate a partly empty one.
            samples = query(f"min(count_over_time(http_requests_total{{{selector}}}[20s]))")
            assert value is not None and samples is not None and samples >= 15, (value, samples)
            assert 42 <= value <= 78, f"{rate} = {value}"
            return value

        eventually(rate_near_60, timeout=90, interval=1, what="a request rate of about 60/s in Prometheus")
        assert eventually(lambda: query(f"sum(orders_total{{{selector}}})"), timeout=30, what="orders") > 0
        pods_seen = query(f"count(count by (pod) (http_requests_total{{{selector}}}))")
        assert pods_seen == 3
    finally:
        cluster.remove_scrape_target(target)

    apps.patch_namespaced_deployment_scale(namespace=namespace, name="shop", body={"spec": {"replicas": 0}})

    def series_gone() -> bool:
        lines = [line for line in simulator.metrics().splitlines()
                 if not line.startswith("#") and f'namespace="{namespace}"' in line]
        assert lines == [], lines[:5]
        return True

    eventually(series_gone, timeout=90, what="the pods' series to leave the simulator's /metrics")
    events = [json.loads(line) for line in simulator.log_path.read_text().splitlines() if line.startswith("{")]
    ours = [e["event"] for e in events if e.get("namespace") == namespace]
    # One line per pod that starts or stops serving, not one per tick (a flapping pod may add a pair).
    assert 3 <= ours.count("pod serving") == ours.count("pod no longer serving") <= 6, ours
    assert simulator.proc.poll() is None
