"""Two replicas started with --peering, as the Deployment runs them: one acts, the other waits, and
takes over when the active one dies without a goodbye."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from operator_process import OperatorProcess
from story import given, then, when
from testbed import ROOT, Cluster
from waiting import eventually

PEERING = ROOT / "manifests" / "install" / "peering.yaml"
LIFETIME = "10"  # seconds a killed replica's keep-alive counts; the Deployment keeps kopf's 60

pytestmark = pytest.mark.exclusive  # it replaces the shared operator


def peers(cluster: Cluster) -> set[str]:
    out = cluster.kubectl("get", "clusterkopfpeering", "guarded-rollouts", "-o", "json")
    return set((json.loads(out.stdout).get("status") or {}).keys())


def reconciled(proc: OperatorProcess, namespace: str, rollout: str) -> bool:
    """The process's own log has a line about this rollout: it ran a reconcile of it."""
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("namespace") == namespace and entry.get("rollout") == rollout:
            return True
    return False


def metric(proc: OperatorProcess, name: str, **labels: str) -> dict[tuple[str, ...], float]:
    """Samples of one metric on the process's /metrics, keyed by the values of the other labels."""
    text = requests.get(f"http://{proc.metrics_address}/metrics", timeout=10).text
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out[tuple(v for k, v in sorted(s.labels.items()) if k not in labels)] = s.value
    return out


@pytest.fixture
def replicas(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """The session's standalone operator steps aside; two peered ones, A started first, take its place."""
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")
    cluster.kubectl("apply", "-f", str(PEERING))
    operator.stop()
    older, newer = (OperatorProcess(cluster, extra_args=["--peering", "--peering-lifetime", LIFETIME],
                                    env={"POD_ID": name}) for name in ("peer-a", "peer-b"))
    try:
        older.start()
        eventually(lambda: "peer-a" in peers(cluster), timeout=60, what="peer-a keeping alive")
        newer.start()
        eventually(lambda: {"peer-a", "peer-b"} <= peers(cluster), timeout=60, what="both peers keeping alive")
        yield older, newer
    finally:
        older.stop()
        newer.stop()
        operator.remove_webhooks()
        cluster.kubectl("delete", "-f", str(PEERING), "--ignore-not-found")
        operator.start()


def test_two_peered_replicas_have_one_acting_and_the_other_takes_over_when_it_is_killed(
        cluster: Cluster, namespace: str, replicas: tuple[OperatorProcess, OperatorProcess]) -> None:
    older, newer = replicas
    shop = given.a_shop(cluster, namespace, replicas=4)
    first = when.rollout_created(shop, "first", waves=[{"replicas": 1, "bake": "1s"}, {"weight": 100, "bake": "1s"}])
    then.phase_is(first, "Succeeded", within=120)
    assert reconciled(older, namespace, "first"), older.tail()
    assert not reconciled(newer, namespace, "first"), "the newer replica waits while the older one lives"
    assert metric(older, "guarded_wave_transitions_total", namespace=namespace, rollout="first")
    assert not metric(newer, "guarded_wave_transitions_total", namespace=namespace)

    cart = given.a_shop(cluster, namespace, name="cart", replicas=4)
    second = when.rollout_created(cart, "second", waves=[{"replicas": 1, "bake": "20s"}, {"weight": 100, "bake": "1s"}])
    when.rollout_reaches(second, stage="Bake", within=90, what="the second rollout baking")
    when.operator_killed(older)
    status = then.phase_is(second, "Succeeded", within=180)

    assert reconciled(newer, namespace, "second"), newer.tail()
    assert "Resuming operations" in newer.log_path.read_text(errors="replace")
    assert [h["wave"] for h in status["history"] if h["reason"] == "WaveStarted"] == [0, 1], "no wave repeated"
    # The operator counts a decision's transitions once its status write and Events are through: the Succeeded
    # status can be seen a moment before its count.
    taken_over = eventually(lambda: (m := metric(newer, "guarded_wave_transitions_total", namespace=namespace,
                                                 rollout="second")).get(("Promote", "Succeeded")) == 1 and m,
                            timeout=15, what="the Promote -> Succeeded transition counted by the newer replica")
    assert ("Pending", "1") not in taken_over, "the older replica started it; the newer one only finished it"
    assert metric(newer, "guarded_rollouts", namespace=namespace, phase="Succeeded") == {(): 2.0}, \
        "the newer replica now drives both rollouts"
