"""An exception anywhere in a reconcile never leaves a workload half-changed.

The operator runs with failpoints (guarded/faults.py: an exception raised on purpose at one step of
one rollout's reconcile, as a bug would raise it there). Each rollout below meets its failpoint in
wave 2, when the stable is lowered or about to be; each must end RolledBack (OperatorError) with the
stable at full capacity, the canary gone, the condition naming the error, and Ready pods never below
the target's replicas. A failure before the start holds the rollout and changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from operator_process import OperatorProcess
from rollouts import Shop, guarded_rollout
from testbed import Cluster
from waiting import eventually

REPLICAS = 4
WAVES = [{"replicas": 1, "bake": "2s"}, {"weight": 50, "bake": "4s"}, {"weight": 100, "bake": "2s"}]
# rollout name (and its target) -> the failpoint that breaks its reconcile
FAILPOINTS = {
    "unwritten": "persist@ScaleStable#1",      # wave 2's canary is up and the stable lowered; the status write fails
    "lowering": "act@ScaleStable#1",           # carrying out "lower the stable" fails
    "baking": "decide@Bake#1",                 # deciding fails while wave 2 bakes on a lowered stable
}
PENDING = "before-start"                      # fails on every reconcile before wave 1


@pytest.fixture
def failing_operator(cluster: Cluster, operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator steps aside for one whose reconciles raise at the failpoints."""
    points = [f"{point}/{name}" for name, point in FAILPOINTS.items()] + [f"observe@Pending/{PENDING}"]
    operator.stop()
    proc = OperatorProcess(cluster, env={"GUARDED_FAILPOINTS": ",".join(points)})
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        operator.start()


def test_an_exception_at_any_step_of_a_wave_restores_the_stable_and_names_the_error(
        cluster: Cluster, namespace: str, failing_operator: OperatorProcess) -> None:
    shops = {name: Shop(cluster, namespace, name=name) for name in FAILPOINTS}
    for shop in shops.values():
        shop.deploy(REPLICAS)
    samples: dict[str, list[int]] = {name: [] for name in FAILPOINTS}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, shop in shops.items():
                samples[name].append(shop.ready(name) + shop.ready(f"{name}-canary"))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        for name, shop in shops.items():
            shop.create_rollout(guarded_rollout(name, target=name, waves=WAVES))
        statuses = {name: shop.wait_phase(name, "RolledBack", timeout=120) for name, shop in shops.items()}
    finally:
        stop.set()
        thread.join(timeout=5)

    for name, status in statuses.items():
        shop = shops[name]
        assert status["rollbackReason"] == "OperatorError", (name, status["history"][-3:])
        rolling_back = next(h for h in status["history"] if h["reason"] == "RollingBack")
        assert rolling_back["wave"] == 1 and "InjectedFault" in rolling_back["message"], rolling_back
        assert f"failpoint {FAILPOINTS[name].split('#')[0]}" in rolling_back["message"]
        assert shop.deployment(f"{name}-canary") is None
        assert shop.deployment(name).spec.replicas == REPLICAS and shop.ready(name) == REPLICAS
        assert shop.image() == "registry.example/shop:1.0.0"
        failed = next(c for c in status["conditions"] if c["type"] == "ReconcileFailed")
        # The failpoint is not hit while rolling back, so the reconciles that finished it succeeded.
        assert failed["status"] == "False" and failed["reason"] == "Recovered"
        assert any(e.reason == "ReconcileFailed" and "guarded/faults.py" in e.message for e in shop.events(name))
        assert samples[name] and min(samples[name]) >= REPLICAS, \
            f"{name}: Ready pods fell to {min(samples[name])} of {REPLICAS}"


def test_an_exception_before_the_start_holds_with_the_error_named_and_changes_nothing(
        cluster: Cluster, namespace: str, failing_operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace, name=PENDING)
    shop.deploy(REPLICAS)
    before = shop.deployment(PENDING).metadata.resource_version
    shop.create_rollout(guarded_rollout(PENDING, target=PENDING, waves=WAVES))
    status = shop.wait_phase(PENDING, "Failed", timeout=60)
    failed = next(c for c in status["conditions"] if c["type"] == "ReconcileFailed")
    assert failed["status"] == "True" and "InjectedFault" in failed["message"]
    assert "holding; the workload was not changed" in failed["message"]
    assert status["message"] == failed["message"] and status["stage"] == "Pending"
    time.sleep(6)  # it keeps failing: every reconcile raises, the status and Events stay the same
    assert shop.status(PENDING)["conditions"] == status["conditions"]
    assert len([e for e in shop.events(PENDING) if e.reason == "ReconcileFailed"]) == 1
    assert shop.deployment(f"{PENDING}-canary") is None
    assert shop.deployment(PENDING).metadata.resource_version == before, "the target was not touched"
    eventually(lambda: shop.ready(PENDING) == REPLICAS, timeout=10, what="all pods still Ready")
