"""Notifications, read off the engine's own persisted decisions: what a team's chat channel would see."""

from __future__ import annotations

import dataclasses

import pytest
from specs import THREE, analysis, spec, wave
from test_engine_analysis import JUDGED, WAVES, metrics
from world import World

from guarded.api.policy import RolloutPolicySpec
from guarded.api.rollout import GuardedRolloutStatus, HistoryEntry, PolicyStatus, RuleSource
from guarded.api.stages import Phase, Stage
from guarded.core.notifications import (
    SCHEMA,
    Notification,
    added_entries,
    of_decision,
    one_line,
    slack_body,
    wanted,
    webhook_body,
)
from guarded.core.observations import ApprovalObs
from guarded.core.policy import NamedPolicy


def sent(world: World) -> list[Notification]:
    """What the operator sends for a run: each decision whose status was written, read once."""
    out: list[Notification] = []
    for (_, before, _), decision in zip(world.inputs, world.log, strict=True):
        if decision.status != before:
            out += of_decision(namespace="shop", name=world.name, target="shop", before=before,
                               after=decision.status)
    return out


def events(notes: list[Notification]) -> list[str]:
    return [n.event for n in notes]


def test_a_release_promoted_through_three_waves_says_started_each_wave_and_promoted_once() -> None:
    world = World(spec(waves=THREE))
    world.run_until_done()
    notes = sent(world)
    assert events(notes) == ["Started", "WaveStarted", "WaveStarted", "Promoted"]
    started, second, third, promoted = notes
    assert "rolling out revision" in started.message and "wave 1/3" in started.message
    assert (second.wave, third.wave) == ("2/3", "3/3") and second.title.endswith("moved to wave 2/3")
    assert promoted.phase == "Succeeded" and "promoted" in promoted.message
    assert len({n.key for n in notes}) == 4


def test_a_bad_release_sends_exactly_one_rollback_with_the_failing_metric_as_evidence() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)),
                  analysis_source=lambda w: metrics(w, canary_orders=0.0005))
    world.run_until_done()
    notes = sent(world)
    assert events(notes) == ["Started", "RolledBack"]
    rollback = notes[-1]
    assert rollback.evidence is not None and rollback.evidence.startswith("AnalysisFailed: wave 1/3: order-rate")
    assert "\n" not in rollback.evidence
    assert rollback.command == "kubectl guarded history release -n shop"


def test_an_abort_is_one_rollback_naming_the_request() -> None:
    world = World(spec(waves=THREE))
    world.run_until(stage=Stage.BAKE, wave=1)
    request = world.ask("abort", by="dave")
    world.run_until_done()
    rollbacks = [n for n in sent(world) if n.event == "RolledBack"]
    assert len(rollbacks) == 1
    assert rollbacks[0].evidence is not None and f"abort requested (request {request.id})" in rollbacks[0].evidence


def test_awaiting_approval_names_who_may_approve_and_the_command() -> None:
    policy = NamedPolicy(name="tier-1", spec=RolloutPolicySpec.model_validate(
        {"rules": {"requiredApprovals": 2, "seniorGroups": ["sre"]}}))
    world = World(spec(waves=[wave("50%", bake="5s"), wave("100%", bake="5s")]))
    world.guard = dataclasses.replace(world.guard, policies=(policy,), authors=("alice",))
    world.run_for(5)
    notes = sent(world)
    assert events(notes) == ["AwaitingApproval"], "held: told once, not every reconcile"
    asked = notes[0]
    assert asked.command == "kubectl guarded approve release -n shop"
    assert asked.approvers == ("2 approval(s) by anyone but the authors (alice); a member of sre when the change "
                               "is AI-assisted or high blast radius")
    assert "0/2 approvals" in asked.message
    world.guard = dataclasses.replace(world.guard, approvals=(
        ApprovalObs(name="a", approver="bob", groups=(), revision=1, rollout_uid="uid-1"),))
    world.run_for(3)
    assert events(sent(world)) == ["AwaitingApproval", "AwaitingApproval"]
    assert "1/2 approvals" in sent(world)[-1].message


STATUS = GuardedRolloutStatus(stage=Stage.PENDING, phase=Phase.BLOCKED, revision="abc")


def entry(reason: str, message: str = "m", time: str = "2026-01-01T00:00:00Z") -> HistoryEntry:
    return HistoryEntry(time=time, reason=reason, message=message)


@pytest.mark.parametrize(("before", "after", "expected"), [
    pytest.param([], [], [], id="nothing"),
    pytest.param(["a"], ["a", "b"], ["b"], id="appended"),
    pytest.param(["a", "b", "c"], ["b", "c", "d", "e"], ["d", "e"], id="oldest dropped off the bounded history"),
    pytest.param(["a", "b"], ["a", "b"], [], id="unchanged"),
    pytest.param(["x"], ["a"], ["a"], id="nothing in common"),
])
def test_added_entries(before: list[str], after: list[str], expected: list[str]) -> None:
    got = added_entries([entry(r) for r in before], [entry(r) for r in after])
    assert [e.reason for e in got] == expected


@pytest.mark.parametrize(("reason", "stage", "expected"), [
    pytest.param("Blocked", Stage.PENDING, ["Blocked"], id="blocked"),
    pytest.param("EmergencyRelease", Stage.SCALE_CANARY, ["EmergencyRelease"], id="emergency"),
    pytest.param("AnalysisPassed", Stage.BAKE, [], id="a passing judgement is not news"),
    pytest.param("ApprovalCounted", Stage.PENDING, [], id="an approval counted is not news"),
    pytest.param("RolledBack", Stage.ROLLED_BACK, ["RolledBack"], id="straight to RolledBack is a rollback"),
])
def test_one_entry(reason: str, stage: Stage, expected: list[str]) -> None:
    after = STATUS.model_copy(update={"stage": stage, "history": [entry(reason, "why")]})
    notes = of_decision(namespace="ns", name="r", target="t", before=STATUS, after=after)
    assert events(list(notes)) == expected


def test_a_rollback_that_completes_is_not_a_second_rollback() -> None:
    rolling = STATUS.model_copy(update={"stage": Stage.ROLLING_BACK, "rollback_reason": "AlertFiring"})
    done = rolling.model_copy(update={"stage": Stage.ROLLED_BACK, "history": [entry("RolledBack")]})
    assert of_decision(namespace="ns", name="r", target="t", before=rolling, after=done) == ()


BLOCKED = Notification(event="Blocked", namespace="ns", rollout="r", target="t", phase="Blocked", wave=None,
                       revision="abc", time="2026-01-01T00:00:00Z", message="Freeze: in the freeze window",
                       command="kubectl guarded status r -n ns")
ROLLBACK = dataclasses.replace(BLOCKED, event="RolledBack", phase="RollingBack", wave="1/3",
                               message="AnalysisFailed: wave 1/3: order-rate: canary 0.1% vs stable 5%",
                               evidence="AnalysisFailed: wave 1/3: order-rate: canary 0.1% vs stable 5%")


def test_the_webhook_body_has_its_documented_fields() -> None:
    body = webhook_body(ROLLBACK)
    assert body == {
        "schema": SCHEMA, "key": "ns/r/abc/RolledBack/2026-01-01T00:00:00Z", "event": "RolledBack",
        "namespace": "ns", "rollout": "r", "target": "t", "phase": "RollingBack", "wave": "1/3", "revision": "abc",
        "time": "2026-01-01T00:00:00Z", "title": "GuardedRollout ns/r is rolled back", "message": ROLLBACK.message,
        "evidence": ROLLBACK.evidence, "approvers": None, "command": "kubectl guarded status r -n ns",
    }


def test_a_slack_message_says_it_in_text_with_the_command_and_no_repeated_evidence() -> None:
    body = slack_body(ROLLBACK)
    assert body["text"].splitlines() == [":rotating_light: *GuardedRollout ns/r is rolled back*", ROLLBACK.message,
                                         "`kubectl guarded status r -n ns`"]
    assert body["blocks"][0]["text"]["text"] == body["text"]
    assert "wave 1/3" in body["blocks"][1]["elements"][0]["text"]


@pytest.mark.parametrize(("events_asked", "expected"), [([], True), (["Blocked"], True), (["RolledBack"], False)])
def test_a_sink_gets_what_it_asked_for(events_asked: list[str], expected: bool) -> None:
    assert wanted(BLOCKED, events_asked) is expected


def test_one_line_flattens_and_bounds() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 2000, limit=10) == "x" * 9 + "…"


def test_who_may_approve_without_policy_rules() -> None:
    after = STATUS.model_copy(update={"authors": ["alice", "carol"], "policy": PolicyStatus(rules=[
        RuleSource(rule="requiredApprovals", value="1", set_by=["p"])]), "history": [entry("AwaitingApproval")]})
    (note,) = of_decision(namespace="ns", name="r", target="t", before=STATUS, after=after)
    assert note.approvers == "1 approval(s) by anyone but the authors (alice, carol)"
