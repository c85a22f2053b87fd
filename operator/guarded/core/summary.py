"""Conditions (KEP-1623) and the one-line status message, derived at the end of a decision."""

from __future__ import annotations

from datetime import timedelta

from guarded.api.common import parse_duration
from guarded.api.rollout import (
    Stage,
)
from guarded.core import conditions as cond
from guarded.core.clock import parse, stamp_seconds
from guarded.core.step import (
    WAVE_STAGES,
    Step,
)


class Summary(Step):
    def update_conditions(self, stage: Stage) -> None:
        paused = bool(self.s.get("paused"))
        self.condition(cond.PAUSED, paused, "PausedByRequest" if paused else "NotPaused",
                       "paused by request" if paused else "")
        reason, active = {
            Stage.PENDING: ("NotStarted", False),
            Stage.SCALE_CANARY: ("CanaryScaling", True),
            Stage.SCALE_STABLE: ("StableScaling", True),
            Stage.BAKE: ("Baking", True),
            Stage.GATE: (cond.REASON_AWAITING_PROMOTION, False),
            Stage.PROMOTE: ("Promoting", True),
            Stage.CLEANUP: ("RemovingCanary", True),
            Stage.RETIRING: ("RetiringCanary", True),
            Stage.ROLLING_BACK: (cond.REASON_ROLLING_BACK, True),
            Stage.ROLLED_BACK: ("RolledBack", False),
            Stage.SUCCEEDED: ("Succeeded", False),
            Stage.FAILED: ("Failed", False),
        }[stage]
        if paused and active and stage in WAVE_STAGES:
            reason, active = "Paused", False
        self.condition(cond.PROGRESSING, active, reason, f"stage {stage}")
        self.condition(cond.COMPLETED, stage == Stage.SUCCEEDED,
                       "Promoted" if stage == Stage.SUCCEEDED else "NotCompleted", "")
        rolled_back = stage == Stage.ROLLED_BACK
        self.condition(cond.ROLLED_BACK, rolled_back,
                       (self.s.get("rollback_reason") or "RolledBack") if rolled_back else "NotRolledBack", "")

    def summary(self, stage: Stage) -> str:
        wave = f"wave {self.wave_label()}"
        failing = [c for c in self.s["conditions"] if c.status == "False"
                   and c.type in (cond.TARGET_FOUND, cond.TARGET_UNCHANGED, cond.TARGET_EXCLUSIVE, cond.VALID)]
        failing += [c for c in self.s["conditions"] if c.type == cond.RECONCILE_FAILED and c.status == "True"]
        if stage == Stage.PENDING:
            failing += [c for c in self.s["conditions"] if c.status == "False"
                        and c.type in (cond.VALIDATED, cond.ADMITTED, cond.APPROVED)]
        if failing:
            return failing[0].message
        if self.s.get("paused") and stage in WAVE_STAGES | {Stage.PENDING}:
            return f"paused at {wave}" if stage != Stage.PENDING else "paused before start"
        texts = {
            Stage.PENDING: "waiting to start",
            Stage.SCALE_CANARY: f"{wave}: waiting for {self.canary_target() if self.total else '?'} canary pods",
            Stage.SCALE_STABLE: f"{wave}: lowering the stable",
            Stage.GATE: f"{wave}: waiting for promote",
            Stage.PROMOTE: "promoting the change to the target",
            Stage.CLEANUP: "removing the canary",
            Stage.SUCCEEDED: "promoted",
            Stage.RETIRING: "spec changed: retiring the old canary",
            Stage.ROLLING_BACK: f"rolling back: {self.s.get('rollback_reason')}",
            Stage.ROLLED_BACK: f"rolled back: {self.s.get('rollback_reason')}",
            Stage.FAILED: "failed",
        }
        if stage == Stage.BAKE:
            # Static while the bake runs, so that status is written on transitions only.
            wave_spec = self.waves[self.wave_index]
            if self.spec.analysis is not None:
                baked = int(float(self.s.get("baked_seconds") or 0.0))
                gap = "" if self.s["analysis"].fresh_since else ", no fresh data: bake stopped"
                return f"{wave}: baking {wave_spec.bake} under observation ({baked}s observed{gap})"
            until = parse(self.s["bake_started_at"]) + timedelta(seconds=parse_duration(wave_spec.bake))
            return f"{wave}: baking {wave_spec.bake} (until {stamp_seconds(until)})"
        return texts[stage]

