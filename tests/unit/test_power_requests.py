"""The power hold against manual requests and short plans: a policy's requiredDetection cannot be skipped
by promote or promote-full, nor by a plan without a wave before the last; a spec-only detect can be, and
the accepted request says so. Powered never outlives the wave or the revision it described."""

from __future__ import annotations

import dataclasses

from specs import analysis, spec, waves
from test_engine_analysis import metrics
from world import World

from guarded.api.policy import RolloutPolicySpec
from guarded.core import conditions as cond
from guarded.core.policy import NamedPolicy

TIER_1 = NamedPolicy(name="tier-1", spec=RolloutPolicySpec.model_validate(
    {"rules": {"requiredDetection": [{"metric": "orders", "degradation": 0.2, "power": 0.99}]}}))
# 5% degradation at 99% power: far more evidence than 3 pods gather in 200 s, so wave 2/3 holds
DETECT = {"interval": "5s", "maxInconclusive": 20, "detect": [{"metric": "orders", "degradation": 0.05,
                                                               "power": 0.99}]}
THREE = waves("1 pod", "50%", "100%", bake="10s")


def world(plan: list, *, governed: bool = True) -> World:
    w = World(spec(waves=plan, analysis=analysis(**DETECT)),
              analysis_source=lambda w: metrics(w, canary_orders=0.05))
    if governed:
        w.guard = dataclasses.replace(w.guard, policies=(TIER_1,))
    return w


def held(w: World) -> World:
    w.run_for(200)
    assert (w.status.stage, w.status.wave) == ("Bake", 1) and cond.is_false(w.status.conditions, cond.POWERED)
    return w


def test_under_a_required_detection_promote_and_promote_full_are_refused_until_powered() -> None:
    for action in ("promote", "promote-full"):
        w = held(world(THREE))
        w.ask(action, by="dave")
        w.run_for(2)
        last = w.status.last_request
        assert last is not None and (last.action, last.result) == (action, "Rejected")
        assert "tier-1" in last.message and "requiredDetection" in last.message and "Powered" in last.message
        assert (w.status.stage, w.status.wave) == ("Bake", 1)


def test_promote_full_is_refused_from_an_earlier_wave_too() -> None:
    w = world(THREE)
    w.run_until(stage="Bake", wave=0)
    w.ask("promote-full", by="dave")
    w.run_for(2)
    assert w.status.last_request is not None and w.status.last_request.result == "Rejected"
    assert w.status.wave == 0


def test_a_spec_only_detect_may_be_skipped_and_the_request_says_so_and_powered_goes() -> None:
    w = held(world(THREE, governed=False))
    w.ask("promote", by="dave")
    w.run_for(2)
    last = w.status.last_request
    assert last is not None and last.result == "Accepted" and "skipped the power hold" in last.message
    assert w.status.wave == 2 and cond.get(w.status.conditions, cond.POWERED) is None  # not a stale False

    w = held(world(THREE, governed=False))
    w.ask("promote-full", by="dave")
    w.run_for(2)
    last = w.status.last_request
    assert last is not None and last.result == "Accepted" and "skipped the power hold" in last.message
    assert cond.get(w.status.conditions, cond.POWERED) is None


def test_a_promote_that_skips_no_power_hold_says_nothing_of_it() -> None:
    w = world(THREE, governed=False)
    w.run_until(stage="Bake", wave=0)
    w.ask("promote", by="dave")
    w.run_for(2)
    assert w.status.last_request is not None and w.status.last_request.result == "Accepted"
    assert w.status.last_request.message == ""


def test_a_single_wave_plan_under_a_required_detection_is_held_at_the_metrics_gate() -> None:
    w = world(waves("100%", bake="10s"))
    w.run_for(20)
    assert w.status.phase == "Blocked" and w.status.wave is None
    gate = next(g for g in w.status.gates if g.gate == "Metrics")
    assert not gate.passed and "spec.waves" in gate.message and "tier-1" in gate.message


def test_a_retry_starts_without_the_previous_powered() -> None:
    w = held(world(THREE, governed=False))
    w.ask("abort", by="dave")
    w.run_until(stage="RolledBack")
    w.ask("retry", by="dave")
    w.run_for(2)
    assert cond.get(w.status.conditions, cond.POWERED) is None


def test_a_power_hold_that_never_powers_is_bounded_by_the_bake_and_progress_deadline() -> None:
    """Reviewer's e1: a detect the evidence cannot reach in time held forever. After the wave's bake plus
    spec.progressDeadline the hold applies onInconclusive: Rollback by default (fail safe), or Hold."""
    w = World(spec(waves=THREE, analysis=analysis(**DETECT), progressDeadline="30s"),
              analysis_source=lambda w: metrics(w, canary_orders=0.05))
    w.run_until(phase="RolledBack")
    assert w.status.rollback_reason == "AnalysisInconclusive" and w.status.wave == 1
    assert any("spec.analysis.detect not powered within its bake (10s) plus spec.progressDeadline (30s)"
               in h.message for h in w.status.history)

    w = World(spec(waves=THREE, analysis=analysis(**DETECT, onInconclusive="Hold"), progressDeadline="30s"),
              analysis_source=lambda w: metrics(w, canary_orders=0.05))
    w.run_for(200)
    assert (w.status.stage, w.status.wave) == ("Bake", 1)
    powered = cond.get(w.status.conditions, cond.POWERED)
    assert powered is not None and "holding (spec.analysis.onInconclusive is Hold)" in powered.message
