"""Ownership and exclusivity: a rollout acts only on what it owns, one rollout per target at a time,
and an unexpected error restores the stable instead of leaving the workload half-changed."""

from __future__ import annotations

from collections.abc import Callable

from specs import THREE, spec
from world import World

from guarded.api.rollout import GuardedRolloutSpec
from guarded.api.stages import Phase, Stage
from guarded.core import conditions as cond
from guarded.core.actions import (
    ApplyCanary,
    ClaimTarget,
    DeleteDeployment,
    PromoteTarget,
    ReleaseTarget,
    ScaleDeployment,
)
from guarded.core.engine import Decision, decide, decide_cleanup, decide_fail_safe
from guarded.core.templates import CLAIM_ANNOTATION

REPLICAS = 4


def two_rollouts(first: GuardedRolloutSpec, second: GuardedRolloutSpec) -> tuple[World, World]:
    a = World(first, replicas=REPLICAS, name="release-latest", uid="uid-a")
    b = World(second, replicas=REPLICAS, name="release-fixed", uid="uid-b",
              deployments=a.deployments, peers=a.peers)
    return a, b


def step_both(a: World, b: World) -> tuple[Decision, Decision]:
    """One round: each operator daemon decides and acts on the same cluster, then the controllers run once."""
    out = []
    for w in (a, b):
        decision = decide(w.spec, w.status, w.observe())
        w.apply(decision)
        w.status = decision.status
        out.append(decision)
    a.tick += 1
    b.tick = a.tick
    a.controllers()
    return out[0], out[1]


def run_both_until(a: World, b: World, *, stage: Stage, limit: int,
                   each: Callable[[Decision, Decision], None] | None = None) -> None:
    """Rounds of step_both until b (the second rollout) is at `stage`; fails after `limit` rounds."""
    for _ in range(limit):
        if b.status.stage == stage:
            return
        da, db = step_both(a, b)
        if each is not None:
            each(da, db)
    assert b.status.stage == stage, (f"waited {limit} rounds for {b.name} to be at {stage}: "
                                     f"{a.name} {a.status.stage} ({a.status.message!r}), "
                                     f"{b.name} {b.status.stage} ({b.status.message!r})")


def touches_workload(decision: Decision) -> bool:
    return any(isinstance(x, ApplyCanary | ScaleDeployment | DeleteDeployment | PromoteTarget | ClaimTarget)
               for x in decision.actions)


def test_a_blocked_rollout_never_touches_the_canary_of_the_rollout_that_holds_the_target() -> None:
    # The reported outage: release-latest is Blocked (image :latest); release-fixed targets the same
    # Deployment. The blocked one used to delete every <target>-canary it saw.
    a, b = two_rollouts(spec(image="shop:latest", waves=THREE), spec(image="shop:2.0.1", waves=THREE))
    canary_uids = set()

    def check(da: Decision, _db: Decision) -> None:
        assert not touches_workload(da), da.actions
        canary, stable = b.serving()
        assert canary + stable >= REPLICAS, f"tick {a.tick}: {canary} canary + {stable} stable Ready"
        if "shop-canary" in a.deployments:
            canary_uids.add(a.deployments["shop-canary"].uid)

    run_both_until(a, b, stage=Stage.SUCCEEDED, limit=200, each=check)
    assert b.status.phase == Phase.SUCCEEDED
    assert len(canary_uids) == 1, canary_uids  # one canary object, never deleted and re-created
    assert a.status.phase == Phase.BLOCKED
    assert CLAIM_ANNOTATION not in a.deployments["shop"].annotations  # released when release-fixed ended
    assert not a.refused and not b.refused


def test_a_second_rollout_whose_gates_pass_waits_and_names_the_one_that_holds_the_target() -> None:
    a, b = two_rollouts(spec(waves=THREE), spec(image="shop:2.0.1", waves=THREE))
    step_both(a, b)  # a starts first and claims the target; b sees the claim on its next decision
    for _ in range(3):
        _da, db = step_both(a, b)
        assert not touches_workload(db), db.actions
    exclusive = cond.get(b.status.conditions, cond.TARGET_EXCLUSIVE)
    assert exclusive is not None and exclusive.status == "False" and exclusive.reason == "HeldByRollout"
    assert "release-latest" in exclusive.message and exclusive.message.startswith("spec.target.name")
    assert b.status.phase == Phase.BLOCKED and b.status.stage == Stage.PENDING
    assert b.status.message == exclusive.message
    # When the holder ends, the waiting rollout starts by itself and ends too.
    run_both_until(a, b, stage=Stage.SUCCEEDED, limit=300)
    assert a.status.stage == Stage.SUCCEEDED and b.status.stage == Stage.SUCCEEDED
    started = [h.time for h in b.status.history if h.reason == "RolloutStarted"]
    ended = [h.time for h in a.status.history if h.reason == "Succeeded"]
    assert started and ended and started[0] >= ended[0]


def test_two_rollouts_starting_in_the_same_instant_cannot_both_start() -> None:
    # Both decide from the same observation (no claim yet); the claim is compare-and-swapped, so the
    # second one's start is refused by the shell and nothing after its claim is carried out.
    a, b = two_rollouts(spec(waves=THREE), spec(image="shop:2.0.1", waves=THREE))
    da = decide(a.spec, a.status, a.observe())
    db = decide(b.spec, b.status, b.observe())
    assert isinstance(da.actions[0], ClaimTarget) and isinstance(db.actions[0], ClaimTarget)
    a.apply(da)
    b.apply(db)
    assert b.refused and b.refused[0][1] == "claimed meanwhile"
    assert a.deployments["shop-canary"].owner_uid == "uid-a"


def test_a_stale_claim_of_a_deleted_rollout_is_taken_over() -> None:
    world = World(spec(waves=THREE), replicas=REPLICAS)
    world.deployments["shop"].annotations[CLAIM_ANNOTATION] = "gone/uid-gone"
    decision = world.step()
    assert decision.actions[0] == ClaimTarget(name="shop", value="release/uid-1", expected="gone/uid-gone")
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED


def test_a_foreign_deployment_by_the_canary_name_is_never_changed_or_deleted() -> None:
    world = World(spec(waves=THREE), replicas=REPLICAS)
    world.step()  # starts: claim and canary
    world.deployments["shop-canary"].owner_uid = "someone-else"

    def leaves_the_canary_alone(_: World, decision: Decision) -> None:
        assert not any(isinstance(x, ApplyCanary | DeleteDeployment) for x in decision.actions), decision.actions

    world.run_for(20, each=leaves_the_canary_alone)
    exclusive = cond.get(world.status.conditions, cond.TARGET_EXCLUSIVE)
    assert exclusive is not None and exclusive.reason == "CanaryNotOwned"
    assert world.status.phase == Phase.BLOCKED


def test_deleting_a_rollout_undoes_only_what_it_owns() -> None:
    world = World(spec(waves=THREE), replicas=REPLICAS)
    world.run_until(stage=Stage.BAKE, wave=1)
    obs = world.observe()
    actions = decide_cleanup(world.status, obs)
    canary = world.deployments["shop-canary"]
    assert DeleteDeployment(name="shop-canary", uid=canary.uid) in actions
    assert ScaleDeployment(name="shop", replicas=REPLICAS, rollout_uid="uid-1") in actions
    assert ReleaseTarget(name="shop", value="release/uid-1") in actions
    # The same cleanup by another rollout (another uid) touches nothing.
    other = decide_cleanup(world.status, obs.__class__(**{**obs.__dict__, "uid": "uid-other", "name": "other"}))
    assert other == ()


def test_an_unexpected_error_mid_wave_rolls_back_and_names_the_error_until_reconciles_succeed() -> None:
    world = World(spec(waves=THREE), replicas=REPLICAS)
    world.run_until(stage=Stage.BAKE, wave=1)
    assert world.serving()[1] < REPLICAS  # the stable is lowered: the workload is half-changed
    error = "ZeroDivisionError in guarded/metrics/gather.py:42 (gather): division by zero"
    decision = decide_fail_safe(world.spec, world.status, world.observe(), error)
    # Nothing judged the canary bad: the stable comes back first, the canary goes once it is Ready.
    assert decision.actions == (ScaleDeployment(name="shop", replicas=REPLICAS, rollout_uid="uid-1"),)
    assert decision.status.stage == Stage.ROLLING_BACK and decision.status.rollback_reason == "OperatorError"
    failed = cond.get(decision.status.conditions, cond.RECONCILE_FAILED)
    assert failed is not None and failed.status == "True" and error in failed.message
    assert [e.reason for e in decision.events] == ["RollingBack", "ReconcileFailed"]
    world.enact(decision)

    def keeps_capacity(world: World, _: Decision) -> None:
        assert sum(world.serving()) >= REPLICAS, f"tick {world.tick}: {world.serving()} Ready"

    world.run_until(stage=Stage.ROLLED_BACK, limit=200, each=keeps_capacity)
    assert world.status.phase == Phase.ROLLED_BACK and world.status.rollback_reason == "OperatorError"
    assert world.serving() == (0, REPLICAS)
    recovered = cond.get(world.status.conditions, cond.RECONCILE_FAILED)
    assert recovered is not None and recovered.status == "False"


def test_an_error_that_repeats_before_the_start_holds_writes_one_event_and_the_same_status() -> None:
    world = World(spec(waves=THREE), replicas=REPLICAS)
    error = "KeyError in guarded/kube/guard.py:7 (gather): 'x'"
    first = decide_fail_safe(world.spec, world.status, world.observe(), error)
    assert first.actions == () and first.status.stage == Stage.PENDING
    assert first.status.phase == Phase.FAILED and error in first.status.message
    second = decide_fail_safe(world.spec, first.status, world.observe(), error)
    assert second.events == () and second.status == first.status
