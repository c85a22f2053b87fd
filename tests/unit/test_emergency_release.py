"""Break glass: an emergency release bakes each wave at most the emergency minimum and still needs an
approval by someone other than its author; it says so in its status, its history and the metrics."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from specs import spec, wave
from world import T0, World, pod_template

from guarded.api.policy import RolloutPolicySpec
from guarded.api.stages import Phase, Stage
from guarded.core import gates, policy
from guarded.core.clock import stamp
from guarded.core.observations import ApprovalObs, DeploymentState, GuardObservation, Observations
from guarded.handlers.telemetry import Telemetry


def named(name: str, **rules: object) -> policy.NamedPolicy:
    return policy.NamedPolicy(name=name, spec=RolloutPolicySpec.model_validate({"rules": rules}))


def approval(who: str, *groups: str) -> ApprovalObs:
    return ApprovalObs(name=f"release-{who}", approver=who, groups=("engineers", *groups), revision=1,
                       rollout_uid="uid-1")


def judge(*policies: policy.NamedPolicy, approvals: tuple[ApprovalObs, ...] = (), **fields: object
          ) -> gates.GateOutcome:
    fields.setdefault("waves", [wave("1 pod", bake="60s"), wave("50%", bake="5m"), wave("100%", bake="10s")])
    guard = GuardObservation(created=stamp(T0), policies=policies, approvals=approvals, authors=("alice",),
                             dry_run_done=True)
    target = DeploymentState(name="shop", replicas=10, template=pod_template(), labels={"tier": "1"})
    obs = Observations(now=T0 + timedelta(minutes=1), namespace="shop", name="release", uid="uid-1", generation=1,
                       target=target, canary=None, guard=guard)
    return gates.evaluate(spec(**fields), obs)  # type: ignore[arg-type]


STRICT = named("tier-1", requiredApprovals=2, minBake="60s", emergencyBake="2s")


def bakes(outcome: gates.GateOutcome) -> list[str]:
    return [w.bake for w in outcome.plan]


def test_every_bake_is_shortened_to_the_policys_emergency_minimum_not_raised_to_min_bake() -> None:
    normal = judge(STRICT, emergency=False)
    assert bakes(normal) == ["60s", "5m", "60s"] and not normal.emergency and normal.emergency_note == ""
    emergency = judge(STRICT, emergency=True)
    assert bakes(emergency) == ["2s", "2s", "2s"] and emergency.emergency
    assert emergency.plan_notes == [], "minBake's raises do not apply to an emergency release"
    assert emergency.emergency_note == (
        "emergency release (spec.emergency): every wave bakes at most 2s (emergencyBake, set by tier-1), not the "
        "60s of minBake (tier-1): bakes 60s, 5m, 10s -> 2s, 2s, 2s")
    rules = {(r.rule, r.value): r.set_by for r in emergency.policy.rules}  # type: ignore[union-attr]
    assert rules[("emergencyBake", "2s")] == ["tier-1"] and rules[("minBake", "60s")] == ["tier-1"]


def test_without_a_policy_setting_it_the_emergency_minimum_is_30s_and_shorter_bakes_stay() -> None:
    outcome = judge(named("tier-1", minBake="5s"), emergency=True)
    assert bakes(outcome) == ["30s", "30s", "10s"]
    assert "at most 30s (emergencyBake, set by default)" in outcome.emergency_note
    raised = judge(named("tier-1", minBake="20s"), emergency=True,
                   waves=[wave("1 pod", bake="1s"), wave("100%", bake="1m")])
    assert bakes(raised) == ["20s", "30s"], "min(max(bake, minBake), emergencyBake)"


def test_the_longest_emergency_bake_of_several_policies_wins() -> None:
    outcome = judge(named("company", emergencyBake="1m"), named("tier-1", emergencyBake="2s"), emergency=True)
    assert bakes(outcome) == ["60s", "1m", "10s"]
    assert "at most 1m (emergencyBake, set by company)" in outcome.emergency_note


@pytest.mark.parametrize(("policies", "approvals", "ok", "says"), [
    ((), (), False, "0/1 approvals of revision 1 (required by spec.emergency; authors alice cannot approve)"),
    ((), (approval("alice"),), False, "0/1 approvals"),                        # her own does not count
    ((), (approval("bob"),), True, "approved by bob"),
    ((named("loose", requiredApprovals=0),), (), False, "0/1 approvals"),     # a policy asking none
    ((STRICT,), (approval("bob"),), False, "1/2 approvals"),                 # a higher count still applies
    ((STRICT,), (approval("bob"), approval("carol")), True, "approved by bob, carol"),
    ((named("ai", seniorGroups=["senior-engineers"]),), (approval("bob"),), False, "senior-engineers"),
])
def test_an_emergency_needs_at_least_one_approval_by_someone_else_and_every_stricter_rule(
        policies: tuple, approvals: tuple, ok: bool, says: str) -> None:
    outcome = judge(*policies, approvals=approvals, emergency=True, aiAssisted=True)
    assert outcome.approved.ok is ok, outcome.approved.message
    assert says in outcome.approved.message


def test_documentation_rules_stay() -> None:
    outcome = judge(named("docs", requiredDocumentation=["ticket"]), approvals=(approval("bob"),), emergency=True)
    assert not outcome.admitted.ok and "spec.ticket is required by docs" in outcome.admitted.message


def test_no_policy_and_no_emergency_asks_nothing() -> None:
    outcome = judge()
    assert outcome.approved.reason == "NotRequired" and outcome.policy is None


def emergency_world() -> World:
    world = World(spec(emergency=True, waves=[wave("1 pod", bake="60s"), wave("100%", bake="60s")]))
    world.guard = dataclasses.replace(world.guard, policies=(STRICT,), authors=("alice",))
    return world


def test_the_engine_waits_for_approvals_then_runs_with_emergency_bakes_and_records_it() -> None:
    world = emergency_world()
    world.run_for(5)
    assert world.status.phase == Phase.AWAITING_APPROVAL and world.status.emergency
    world.guard = dataclasses.replace(world.guard, approvals=(approval("bob"), approval("carol")))
    world.run_until(stage=Stage.SCALE_CANARY)
    assert [w.bake for w in world.status.plan] == ["2s", "2s"]
    entry = next(h for h in world.status.history if h.reason == "EmergencyRelease")
    assert entry.message.endswith("bakes 60s, 60s -> 2s, 2s")
    assert any(e.reason == "EmergencyRelease" and e.type == "Warning" for d in world.log for e in d.events)
    started = world.tick
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED and world.status.emergency
    assert world.tick - started < 60, "waves of 2 s, not of 60 s"

    t = Telemetry()
    for (_, old, seen), made in zip(world.inputs, world.log, strict=True):
        t.record(seen, old, made, 0.001)
    assert t.registry.get_sample_value("guarded_emergency_releases_total", {"namespace": "shop"}) == 1


def test_a_normal_release_is_not_counted_as_an_emergency() -> None:
    world = World(spec(waves=[wave("1 pod", bake="2s"), wave("100%", bake="2s")]))
    world.run_until_done()
    t = Telemetry()
    for (_, old, seen), made in zip(world.inputs, world.log, strict=True):
        t.record(seen, old, made, 0.001)
    assert not world.status.emergency
    assert (t.registry.get_sample_value("guarded_emergency_releases_total", {"namespace": "shop"}) or 0) == 0
    assert all(h.reason != "EmergencyRelease" for h in world.status.history)


def test_a_promote_during_an_emergency_bake_is_held_to_the_emergency_bake_not_to_min_bake() -> None:
    world = World(spec(emergency=True, waves=[wave("1 pod", bake="60s"), wave("100%", bake="60s")]))
    world.guard = dataclasses.replace(world.guard, policies=(named("tier-1", minBake="60s", emergencyBake="10s"),),
                                      authors=("alice",), approvals=(approval("bob"),))
    world.run_until(stage=Stage.BAKE, wave=0)
    world.ask("promote")
    world.step()
    refused = world.status.last_request
    assert refused is not None and refused.result == "Rejected"
    assert "an emergency release bakes every wave 10s" in refused.message, refused.message
    assert "60s" not in refused.message, "minBake does not hold an emergency release"
    world.run_until(stage=Stage.SCALE_CANARY, wave=1, limit=15)  # the 10 s bake ends the wave by itself
