"""Conditions (KEP-1623) and the one-line status message, derived at the end of a decision."""

from __future__ import annotations

from datetime import timedelta

from guarded.api.common import parse_duration
from guarded.api.reasons import Reason
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core.clock import parse, stamp_seconds
from guarded.core.draft import Draft, Inputs, canary_target, current_wave, total, wave_label

# Progressing's reason, and whether it is True, in each stage.
_PROGRESS: dict[Stage, tuple[Reason, bool]] = {
    Stage.PENDING: (Reason.NOT_STARTED, False),
    Stage.SCALE_CANARY: (Reason.CANARY_SCALING, True),
    Stage.SCALE_STABLE: (Reason.STABLE_SCALING, True),
    Stage.BAKE: (Reason.BAKING, True),
    Stage.GATE: (Reason.AWAITING_PROMOTION, False),
    Stage.PROMOTE: (Reason.PROMOTING, True),
    Stage.CLEANUP: (Reason.REMOVING_CANARY, True),
    Stage.RETIRING: (Reason.RETIRING_CANARY, True),
    Stage.ROLLING_BACK: (Reason.ROLLING_BACK, True),
    Stage.ROLLED_BACK: (Reason.ROLLED_BACK, False),
    Stage.SUCCEEDED: (Reason.SUCCEEDED, False),
    Stage.FAILED: (Reason.FAILED, False),
}


def update_conditions(inp: Inputs, d: Draft) -> Draft:
    stage, paused = d.stage, d.status.paused
    d = d.condition(inp, cond.PAUSED, paused, Reason.PAUSED_BY_REQUEST if paused else Reason.NOT_PAUSED,
                    "paused by request" if paused else "")
    reason, active = _PROGRESS[stage]
    if paused and active and stage.in_wave:
        reason, active = Reason.PAUSED, False
    d = d.condition(inp, cond.PROGRESSING, active, reason, f"stage {stage}")
    succeeded, rolled_back = stage == Stage.SUCCEEDED, stage == Stage.ROLLED_BACK
    d = d.condition(inp, cond.COMPLETED, succeeded, Reason.PROMOTED if succeeded else Reason.NOT_COMPLETED, "")
    return d.condition(inp, cond.ROLLED_BACK, rolled_back,
                       (d.status.rollback_reason or Reason.ROLLED_BACK) if rolled_back else Reason.NOT_ROLLED_BACK, "")


def summary(inp: Inputs, d: Draft) -> str:
    """The status message: the first failing condition that holds the rollout, else where it is."""
    s, stage = d.status, d.stage
    holding = (cond.TARGET_FOUND, cond.TARGET_UNCHANGED, cond.TARGET_EXCLUSIVE, cond.VALID)
    failing = [c for c in s.conditions if c.status == "False" and c.type in holding]
    failing += [c for c in s.conditions if c.type == cond.RECONCILE_FAILED and c.status == "True"]
    if stage == Stage.PENDING:
        failing += [c for c in s.conditions if c.status == "False"
                    and c.type in (cond.VALIDATED, cond.ADMITTED, cond.APPROVED)]
    if failing:
        return failing[0].message
    wave = f"wave {wave_label(inp, s)}"
    if s.paused and (stage.in_wave or stage == Stage.PENDING):
        return f"paused at {wave}" if stage != Stage.PENDING else "paused before start"
    if stage == Stage.BAKE:
        return _baking(inp, d, wave)
    texts = {
        Stage.PENDING: "waiting to start",
        Stage.SCALE_CANARY: f"{wave}: waiting for {canary_target(inp, s) if total(s) else '?'} canary pods",
        Stage.SCALE_STABLE: f"{wave}: lowering the stable",
        Stage.GATE: f"{wave}: waiting for promote",
        Stage.PROMOTE: "promoting the change to the target",
        Stage.CLEANUP: "removing the canary",
        Stage.SUCCEEDED: "promoted",
        Stage.RETIRING: "spec changed: retiring the old canary",
        Stage.ROLLING_BACK: f"rolling back: {s.rollback_reason}",
        Stage.ROLLED_BACK: f"rolled back: {s.rollback_reason}",
        Stage.FAILED: "failed",
    }
    return texts[stage]


def _baking(inp: Inputs, d: Draft, wave: str) -> str:
    s, bake = d.status, current_wave(inp, d.status).bake
    if inp.spec.analysis is not None:
        gap = "" if s.analysis.fresh_since else ", no fresh data: bake stopped"
        return f"{wave}: baking {bake} under observation ({int(float(s.baked_seconds or 0.0))}s observed{gap})"
    # Static while the bake runs, so that status is written on transitions only.
    until = parse(s.bake_started_at) + timedelta(seconds=parse_duration(bake))
    return f"{wave}: baking {bake} (until {stamp_seconds(until)})"
