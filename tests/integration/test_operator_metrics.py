"""The operator's own metrics, scraped by the test bed's real Prometheus while a rollout runs, and
its readiness as a kubelet would probe it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from operator_process import OperatorProcess, _free_port, end
from rollouts import Shop, guarded_rollout
from testbed import ROOT, Cluster
from waiting import eventually

DASHBOARD = ROOT / "manifests" / "grafana" / "guarded-rollouts-dashboard.json"
WAVES = [{"replicas": 1, "bake": "2s"}, {"weight": 50, "bake": "2s"}, {"weight": 100, "bake": "2s"}]


def query(cluster: Cluster, promql: str) -> list[dict]:
    r = requests.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


@pytest.fixture
def scraped(cluster: Cluster, operator: OperatorProcess, namespace: str) -> Iterator[OperatorProcess]:
    """The session operator's /metrics as a scrape target of the test bed's Prometheus, up."""
    if cluster.testbed_dir is None or cluster.prometheus_url is None:
        pytest.skip("adding the operator as a scrape target needs the local test bed's Prometheus")
    name = f"operator-{namespace}"
    cluster.add_scrape_target(name, operator.metrics_address, {"source": "guarded-operator"})
    try:
        eventually(lambda: any(s["value"][1] == "1" for s in query(
            cluster, f'up{{instance="{operator.metrics_address}"}}')), timeout=60, what="the operator scraped")
        yield operator
    finally:
        cluster.remove_scrape_target(name)


def test_a_rollout_shows_in_prometheus_as_wave_transitions_and_a_succeeded_phase(
        cluster: Cluster, namespace: str, scraped: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(4)
    shop.create_rollout(guarded_rollout("release", waves=WAVES))
    shop.wait_phase("release", "Succeeded", timeout=180)

    expected = {("Pending", "1"), ("1", "2"), ("2", "3"), ("3", "Promote"), ("Promote", "Succeeded")}

    def transitions() -> dict[tuple[str, str], float] | None:
        found = {(s["metric"]["from"], s["metric"]["to"]): float(s["value"][1]) for s in query(
            cluster, f'guarded_wave_transitions_total{{namespace="{namespace}", rollout="release"}}')}
        return found if set(found) == expected else None

    assert eventually(transitions, timeout=60, what="every transition in Prometheus") == dict.fromkeys(expected, 1.0)

    def phases() -> dict[str, float] | None:
        found = {s["metric"]["phase"]: float(s["value"][1]) for s in query(
            cluster, f'guarded_rollouts{{namespace="{namespace}"}}')}
        return found if found.get("Succeeded") == 1 else None

    phases_seen = eventually(phases, timeout=60, what="the rollout counted as Succeeded")
    assert phases_seen.get("Progressing", 0) == 0, phases_seen
    decided = query(cluster, f'guarded_decision_seconds_count{{instance="{scraped.metrics_address}"}}')
    assert decided and float(decided[0]["value"][1]) >= len(expected)
    reconciled = query(cluster, f'sum(guarded_reconcile_seconds_count{{instance="{scraped.metrics_address}",'
                                f' result="ok"}})')
    assert reconciled and float(reconciled[0]["value"][1]) >= len(expected)

    # The dashboard's queries run on real Prometheus, and its panels of this namespace show the rollout.
    shown = dashboard_results(cluster, namespace)
    table = shown["Transitions per rollout (since each replica started)"]
    assert {(r["metric"]["from"], r["metric"]["to"]) for r in table} == expected
    assert [float(r["value"][1]) for r in shown["Succeeded (range)"]] == [1.0], "counted though its series is new"
    assert shown["Rollouts by phase"] and shown["Decision latency (decide)"] and shown["Reconciles by result"], shown


def fence_checks(operator: OperatorProcess) -> dict[str, float]:
    """guarded_fence_checks_total by what answered, from the operator's /metrics."""
    text = requests.get(f"http://{operator.metrics_address}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("guarded_fence_checks_total{"):
            by = line.split('by="', 1)[1].split('"', 1)[0]
            out[by] = float(line.rsplit(" ", 1)[1])
    return out


def test_the_split_brain_fence_is_answered_by_the_version_watch_not_a_get(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """A cluster-wide operator's fence takes the rollouts' version watch (kube/versions) for a GET of the
    rollout when it has shown a status write of ours sent under a second ago: a rollout's actions, each
    right after the status write that moved it on, are fenced without a request of their own."""
    before = fence_checks(operator)
    shop = Shop(cluster, namespace)
    shop.deploy(4)
    shop.create_rollout(guarded_rollout("release", waves=WAVES))
    shop.wait_phase("release", "Succeeded", timeout=180)
    after = fence_checks(operator)
    by_watch = after.get("watch", 0.0) - before.get("watch", 0.0)
    checks = sum(after.values()) - sum(before.values())
    # Each wave's canary and stable moves, the promotion and the canary's removal: a dozen decisions with
    # actions; other tests' rollouts may run beside it, so only a lower bound holds for the count.
    assert checks >= 6, (before, after)
    assert by_watch >= 1, f"no fence check was answered by the version watch: {before} -> {after}"


def dashboard_results(cluster: Cluster, namespace: str) -> dict[str, list[dict]]:
    """Each panel's results, with Grafana's variables filled in; a query Prometheus rejects fails here."""
    model = json.loads(DASHBOARD.read_text())
    fill = {"$job": ".*", "$namespace": namespace, "$__rate_interval": "30s", "$__range": "10m"}
    out: dict[str, list[dict]] = {}
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in fill.items():
                expr = expr.replace(var, value)
            out.setdefault(panel["title"], []).extend(query(cluster, expr))
    return out


def test_the_operator_is_ready_once_started_and_serves_its_own_health_with_its_metrics(
        operator: OperatorProcess) -> None:
    assert operator.ready()
    text = requests.get(f"http://{operator.metrics_address}/metrics", timeout=10).text
    assert "guarded_decision_seconds_bucket" in text and "process_resident_memory_bytes" in text


def test_an_operator_that_cannot_reach_the_api_server_is_alive_but_not_ready(cluster: Cluster) -> None:
    """Readiness means more than a running loop: the credentials must have reached the API server."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    closed = _free_port()  # nothing listens there
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    directory = Path(tempfile.mkdtemp(prefix="guarded-unreachable-"))
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    health, metrics, webhooks = _free_port(), _free_port(), _free_port()
    context = cluster.context_for("operator")
    log = (directory / "operator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "guarded.main", "--liveness", f"http://127.0.0.1:{health}/healthz",
         "--metrics-listen", f"127.0.0.1:{metrics}", "--webhook-listen", f"127.0.0.1:{webhooks}",
         *(["--context", context] if context else [])],
        env=dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1"), cwd=ROOT,
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def answers(url: str) -> requests.Response | None:
            assert proc.poll() is None, (directory / "operator.log").read_text()[-3000:]
            try:
                return requests.get(url, timeout=10)
            except requests.ConnectionError:
                return None

        # kopf serves liveness only after every startup handler has finished, so by then readiness
        # has nothing left to wait for but the API server.
        alive = eventually(lambda: answers(f"http://127.0.0.1:{health}/healthz"), timeout=60, what="kopf's liveness")
        assert alive.status_code == 200
        readiness = answers(f"http://127.0.0.1:{metrics}/readyz")
        assert readiness is not None and readiness.status_code == 503
        assert "Kubernetes API not reached" in readiness.text, readiness.text
    finally:
        end(proc)
        log.close()
