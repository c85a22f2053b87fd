"""Manual requests (abort, pause, resume, promote, promote-full, retry) inside a decision.

`handle_request` answers one request in `status.lastRequest` (its id makes it count once): accepted,
or rejected with the reason; either way it is a history entry and an Event naming who asked.
"""

from __future__ import annotations

from collections.abc import Callable

from guarded.api.common import parse_duration
from guarded.api.reasons import Reason
from guarded.api.rollout import REQUEST_ACTIONS, RequestRecord
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core.clock import seconds_between, stamp
from guarded.core.consumers import parent_of
from guarded.core.draft import Draft, Inputs, current_wave, wave_index, wave_label, waves
from guarded.core.moves import advance, past_power_hold, restart, rollback, unpause
from guarded.core.observations import Request
from guarded.core.workloads import canary_ours

# (draft after the request, None) when accepted; (draft unchanged, why not) when rejected.
Answer = tuple[Draft, str | None]


def handle_request(inp: Inputs, d: Draft, req: Request) -> Draft:
    answer: Callable[[Inputs, Draft, Request], Answer] | None = _ANSWERS.get(req.action)
    parent = parent_of(inp)
    note = ""
    if req.error:
        d, refusal = d, req.error
    elif parent is not None and req.action in ("promote", "promote-full", "retry", "pause", "resume"):
        d, refusal = d, (f"this rollout moves with GuardedRollout {parent.name!r} (a shared change, wave by wave): "
                         f"ask that one (kubectl guarded {req.action} {parent.name})")
    elif req.action in ("promote", "promote-full") and (why := policy_forbids_skip(inp, d)
                                                          or policy_forbids_unpowered(inp, d, req.action)):
        d, refusal = d, why
    elif answer is None:
        d, refusal = d, f"unknown action {req.action!r} ({', '.join(REQUEST_ACTIONS)})"
    else:
        note = _skipped_power_note(inp, d, req.action)
        d, refusal = answer(inp, d, req)
    by = inp.obs.requester
    note = note if refusal is None and req.action in ("promote", "promote-full") else ""
    d = d.update(last_request=RequestRecord(id=req.id, action=req.action, result="Accepted" if refusal is None
                                            else "Rejected", message=refusal or note, time=stamp(inp.now), by=by))
    who = f"request {req.id} by {by}" if by else f"request {req.id}"
    if refusal is None:
        return d.record(inp, Reason.for_request(req.action), f"{req.action} accepted ({who})"
                        + (f": {note}" if note else ""))
    return d.record(inp, Reason.REQUEST_REJECTED, f"{req.action} rejected ({who}): {refusal}", warning=True)


def _abort(inp: Inputs, d: Draft, req: Request) -> Answer:
    stage = d.stage
    if stage.in_wave or (stage == Stage.PENDING and canary_ours(inp)):
        # (In Pending: a start whose status was never written may have created the canary: remove it.)
        return rollback(inp, d, Reason.ABORTED, f"abort requested (request {req.id})"), None
    if stage == Stage.PENDING:
        return d.update(rollback_reason=str(Reason.ABORTED), completed_at=stamp(inp.now)).goto(Stage.ROLLED_BACK), None
    if stage.promoting:
        return d, "the change is already being promoted to the target; abort is not allowed now"
    return d, f"nothing to abort in stage {stage}"


def _pause(inp: Inputs, d: Draft, req: Request) -> Answer:
    if not (d.stage.in_wave or d.stage == Stage.PENDING):
        return d, f"cannot pause in stage {d.stage}"
    return (d if d.status.paused else d.update(paused=True, paused_at=stamp(inp.now))), None


def _resume(inp: Inputs, d: Draft, req: Request) -> Answer:
    return (unpause(inp, d), None) if d.status.paused else (d, "not paused")


def _promote(inp: Inputs, d: Draft, req: Request) -> Answer:
    if d.stage not in (Stage.BAKE, Stage.GATE):
        return d, (f"promote skips a bake or a gate; in stage {d.stage} the wave is not Ready yet "
                   "(use promote-full to skip every remaining wave)")
    d = unpause(inp, d)
    d = d.record(inp, Reason.PROMOTE_REQUESTED, f"wave {wave_label(inp, d.status)}: bake skipped by request {req.id}")
    return advance(inp, d), None


def _promote_full(inp: Inputs, d: Draft, req: Request) -> Answer:
    if not d.stage.in_wave:
        return d, f"nothing to promote in stage {d.stage}"
    d = unpause(inp, d).record(inp, Reason.PROMOTE_FULL_REQUESTED, f"remaining waves skipped by request {req.id}")
    return past_power_hold(d).goto(Stage.PROMOTE), None


def _retry(inp: Inputs, d: Draft, req: Request) -> Answer:
    if d.stage not in (Stage.ROLLED_BACK, Stage.FAILED):
        return d, f"retry needs a rolled-back rollout; stage is {d.stage}"
    return restart(inp, d), None


_ANSWERS: dict[str, Callable[[Inputs, Draft, Request], Answer]] = {
    "abort": _abort, "pause": _pause, "resume": _resume, "promote": _promote, "promote-full": _promote_full,
    "retry": _retry,
}


def policy_forbids_skip(inp: Inputs, d: Draft) -> str | None:
    """A promote skips bake time; under a policy with minBake the current wave must have baked that long."""
    policy = d.status.policy
    rule = next((r for r in policy.rules if r.rule == "minBake"), None) if policy is not None else None
    if rule is None or d.stage == Stage.GATE:
        return None  # at a gate the wave's bake (at least minBake, see status.plan) is over
    baked = 0.0
    if d.stage == Stage.BAKE:
        baked = (float(d.status.baked_seconds or 0.0) if inp.spec.analysis is not None
                 else seconds_between(d.status.bake_started_at, inp.now))
    required = parse_duration(rule.value)
    why = f"policy {', '.join(rule.set_by)} requires every wave to bake {rule.value}"
    if d.status.emergency:  # break glass: the plan's (shortened) bake is the minimum, not minBake
        planned = current_wave(inp, d.status).bake
        required, why = min(required, parse_duration(planned)), f"an emergency release bakes every wave {planned}"
    if baked >= required:
        return None
    return f"{why}; wave {wave_label(inp, d.status)} has baked {int(baked)}s"


def _skips_power_hold(inp: Inputs, d: Draft, action: str) -> bool:
    """The request would move past the wave before the last (core/judging.power_hold) before it is Powered:
    `promote` at that wave, `promote-full` from it or any earlier one."""
    if not d.stage.in_wave or cond.is_true(d.status.conditions, cond.POWERED):
        return False
    last = len(waves(inp, d.status)) - 1
    at = wave_index(d.status)
    return at == last - 1 if action == "promote" else at <= last - 1


def _detection_rule(d: Draft) -> tuple[str, list[str]] | None:
    """The requiredDetection rules the governing policies set (as status.policy shows them), and by whom."""
    policy = d.status.policy
    rules = [r for r in policy.rules if r.rule == "requiredDetection"] if policy is not None else []
    if not rules:
        return None
    return "; ".join(r.value for r in rules), sorted({p for r in rules for p in r.set_by})


def policy_forbids_unpowered(inp: Inputs, d: Draft, action: str) -> str | None:
    """Under a policy's requiredDetection no request skips the power hold: the wave before the last
    must be Powered (the evidence could have detected the degradation) before the last wave or promotion."""
    found = _detection_rule(d)
    if found is None or not _skips_power_hold(inp, d, action):
        return None
    value, by = found
    count = len(waves(inp, d.status))
    return (f"policy {', '.join(by)} requires detection (rules.requiredDetection: {value}): the wave before "
            f"the last ({count - 1}/{count}) must reach that power first (condition Powered is not True); "
            f"{action} would skip the power hold")


def _skipped_power_note(inp: Inputs, d: Draft, action: str) -> str:
    """What an accepted promote says when it skips the power hold spec.analysis.detect asked for (no policy
    requires it, so the request may)."""
    spec = inp.spec.analysis
    if spec is None or not spec.detect or len(waves(inp, d.status)) < 2 or not _skips_power_hold(inp, d, action):
        return ""
    return ("skipped the power hold: spec.analysis.detect was not yet powered (condition Powered is not True), "
            "so the evidence may not have been able to detect the degradation it names")
