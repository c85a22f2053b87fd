"""An exception anywhere in a reconcile never leaves a workload half-changed.

The operator runs with failpoints (guarded/faults.py: an exception raised on purpose at one step of
one rollout's reconcile, as a bug would raise it there). Each rollout below meets its failpoint in
wave 2, when the stable is lowered or about to be; each must end RolledBack (OperatorError) with the
stable at full capacity, the canary gone, the condition naming the error, and Ready pods never below
the target's replicas. A failure before the start holds the rollout and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from operator_process import OperatorProcess
from story import given, then, when
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

pytestmark = pytest.mark.exclusive  # it replaces the shared operator


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
    shops = {name: given.a_shop(cluster, namespace, name=name, replicas=REPLICAS) for name in FAILPOINTS}
    with ExitStack() as stack:
        watches = {name: stack.enter_context(when.watched(shop)) for name, shop in shops.items()}
        rollouts = {name: when.rollout_created(shop, name, waves=WAVES) for name, shop in shops.items()}
        statuses = {name: then.phase_is(rollout, "RolledBack", within=120) for name, rollout in rollouts.items()}

    for name, status in statuses.items():
        shop, rollout = shops[name], rollouts[name]
        assert status["rollbackReason"] == "OperatorError", (name, status["history"][-3:])
        rolling_back = next(h for h in status["history"] if h["reason"] == "RollingBack")
        assert rolling_back["wave"] == 1 and "InjectedFault" in rolling_back["message"], rolling_back
        assert f"failpoint {FAILPOINTS[name].split('#')[0]}" in rolling_back["message"]
        then.canary_gone(shop)
        assert shop.deployment(name).spec.replicas == REPLICAS
        then.stable_ready(shop, REPLICAS)
        assert shop.image() == "registry.example/shop:1.0.0"
        failed = rollout.condition("ReconcileFailed", status)
        # The failpoint is not hit while rolling back, so the reconciles that finished it succeeded.
        assert failed["status"] == "False" and failed["reason"] == "Recovered"
        assert any(e.reason == "ReconcileFailed" and "guarded/faults.py" in e.message for e in rollout.events())
        then.capacity_kept(watches[name], REPLICAS)


def test_an_exception_before_the_start_holds_with_the_error_named_and_changes_nothing(
        cluster: Cluster, namespace: str, failing_operator: OperatorProcess) -> None:
    shop = given.a_shop(cluster, namespace, name=PENDING, replicas=REPLICAS)
    before = shop.deployment(PENDING).metadata.resource_version
    rollout = when.rollout_created(shop, PENDING, waves=WAVES)
    status = then.at(rollout, phase="Failed", stage="Pending", within=60)
    failed = rollout.condition("ReconcileFailed", status)
    assert failed["status"] == "True" and "InjectedFault" in failed["message"]
    assert "holding; the workload was not changed" in failed["message"]
    assert status["message"] == failed["message"]
    time.sleep(6)  # it keeps failing: every reconcile raises, the status and Events stay the same
    assert rollout.status()["conditions"] == status["conditions"]
    assert len([e for e in rollout.events() if e.reason == "ReconcileFailed"]) == 1
    then.canary_gone(shop)
    assert shop.deployment(PENDING).metadata.resource_version == before, "the target was not touched"
    eventually(lambda: shop.ready(PENDING) == REPLICAS, timeout=10, what="all pods still Ready")
