"""The engine and its gates: a held rollout moves by itself once the gate clears, and says why it waited."""

from __future__ import annotations

import dataclasses

from specs import spec, wave
from world import World

from guarded.api.policy import RolloutPolicySpec
from guarded.api.stages import Phase, Stage
from guarded.core.observations import ApprovalObs
from guarded.core.policy import NamedPolicy

POLICY = NamedPolicy(name="tier-1", spec=RolloutPolicySpec.model_validate(
    {"rules": {"requiredApprovals": 1, "minBake": "30s", "firstWave": {"maxReplicas": 1}}}))


def governed_world() -> World:
    world = World(spec(waves=[wave("50%", bake="10s"), wave("100%", bake="10s", gate=True)]))
    world.guard = dataclasses.replace(world.guard, policies=(POLICY,), authors=("alice",))
    return world


def test_a_rollout_awaits_approval_then_starts_by_itself_with_the_policy_plan() -> None:
    world = governed_world()
    world.run_for(5)
    assert world.status.phase == Phase.AWAITING_APPROVAL and world.status.stage == Stage.PENDING
    assert "shop-canary" not in world.deployments
    world.guard = dataclasses.replace(world.guard, approvals=(
        ApprovalObs(name="a", approver="bob", groups=("engineers",), revision=1, rollout_uid="uid-1"),))
    world.step()
    assert world.status.stage == Stage.SCALE_CANARY
    assert [(w.replicas, w.weight, w.bake) for w in world.status.plan] == [(1, None, "30s"), (None, 100, "30s")]
    reasons = [h.reason for h in world.status.history]
    assert reasons[:5] == ["AwaitingApproval", "ApprovalCounted", "GatesPassed", "PolicyApplied", "PolicyApplied"]
    assert world.deployments["shop-canary"].replicas == 1  # the first wave capped to one pod, not 50%


def test_a_promote_request_cannot_skip_the_policy_minimum_bake() -> None:
    world = governed_world()
    world.guard = dataclasses.replace(world.guard, approvals=(
        ApprovalObs(name="a", approver="bob", groups=(), revision=1, rollout_uid="uid-1"),))
    world.run_until(stage=Stage.BAKE)
    world.ask("promote", by="dave")
    world.step()
    last = world.status.last_request
    assert last is not None and last.result == "Rejected" and last.by == "dave"
    assert "requires every wave to bake 30s" in last.message
    # wave 2 has a manual gate: once it has baked (30 s, the policy's), promote may go on
    world.run_until(stage=Stage.GATE, limit=200)
    again = world.ask("promote")
    world.step()
    assert world.status.last_request.result == "Accepted"  # type: ignore[union-attr]
    assert any(f"request {again.id} by dave" in h.message for h in world.status.history)


def test_a_rollout_held_before_its_gates_keeps_no_place_in_a_concurrency_queue() -> None:
    from guarded.api.rollout import GateRecord
    world = governed_world()
    world.status = world.status.model_copy(update={"gates": [
        GateRecord(gate="Concurrency", passed=False, reason="ConcurrencyLimit", message="policy x allows 1")]})
    world.deployments["shop"].replicas = 0  # its target scaled to zero: held before the gates are judged
    world.step()
    assert world.status.gates == []


def test_a_canary_left_by_an_unwritten_start_is_removed_while_the_gates_hold() -> None:
    world = governed_world()
    world.guard = dataclasses.replace(world.guard, approvals=(
        ApprovalObs(name="a", approver="bob", groups=(), revision=1, rollout_uid="uid-1"),))
    world.step(persist=False)  # the start creates the canary, and its status is never written
    assert "shop-canary" in world.deployments
    world.guard = dataclasses.replace(world.guard, approvals=())  # meanwhile the approval was withdrawn
    world.step()
    world.step()
    assert world.status.phase == Phase.AWAITING_APPROVAL and "shop-canary" not in world.deployments
