"""Manual requests (abort, pause, resume, promote, promote-full, retry) inside a decision."""

from __future__ import annotations

from guarded.api.common import parse_duration
from guarded.api.rollout import (
    REQUEST_ACTIONS,
    RequestRecord,
    Stage,
)
from guarded.core.clock import seconds_between, stamp
from guarded.core.model import (
    Request,
)
from guarded.core.step import (
    WAVE_STAGES,
    Step,
)


class Requests(Step):
    def handle_request(self, req: Request) -> None:
        stage = self.stage
        verdict: str | None = None  # None: accepted; otherwise the reason it was refused
        if req.error:
            verdict = req.error
        elif req.action == "abort":
            if stage in WAVE_STAGES:
                self.rollback("Aborted", f"abort requested (request {req.id})")
            elif stage == Stage.PENDING and self.canary_ours():
                # A start whose status was never written may have created the canary: remove it.
                self.rollback("Aborted", f"abort requested (request {req.id})")
            elif stage == Stage.PENDING:
                self.s["rollback_reason"] = "Aborted"
                self.goto(Stage.ROLLED_BACK)
                self.s["completed_at"] = stamp(self.now)
            elif stage in (Stage.PROMOTE, Stage.CLEANUP):
                verdict = "the change is already being promoted to the target; abort is not allowed now"
            else:
                verdict = f"nothing to abort in stage {stage}"
        elif req.action == "pause":
            if stage in WAVE_STAGES or stage == Stage.PENDING:
                if not self.s.get("paused"):
                    self.s.update(paused=True, paused_at=stamp(self.now))
            else:
                verdict = f"cannot pause in stage {stage}"
        elif req.action == "resume":
            if self.s.get("paused"):
                self.unpause()
            else:
                verdict = "not paused"
        elif req.action in ("promote", "promote-full") and self.policy_forbids_skip():
            verdict = self.policy_forbids_skip()
        elif req.action == "promote":
            if stage in (Stage.BAKE, Stage.GATE):
                self.unpause()
                self.record("PromoteRequested", f"wave {self.wave_label()}: bake skipped by request {req.id}")
                self.advance()
            else:
                verdict = (f"promote skips a bake or a gate; in stage {stage} the wave is not Ready yet "
                           "(use promote-full to skip every remaining wave)")
        elif req.action == "promote-full":
            if stage in WAVE_STAGES:
                self.unpause()
                self.record("PromoteFullRequested", f"remaining waves skipped by request {req.id}")
                self.goto(Stage.PROMOTE)
            else:
                verdict = f"nothing to promote in stage {stage}"
        elif req.action == "retry":
            if stage in (Stage.ROLLED_BACK, Stage.FAILED):
                self.restart()
            else:
                verdict = f"retry needs a rolled-back rollout; stage is {stage}"
        else:
            verdict = f"unknown action {req.action!r} ({', '.join(REQUEST_ACTIONS)})"

        result = "Accepted" if verdict is None else "Rejected"
        by = self.obs.requester
        self.s["last_request"] = RequestRecord(id=req.id, action=req.action, result=result,
                                               message=verdict or "", time=stamp(self.now), by=by)
        who = f"request {req.id} by {by}" if by else f"request {req.id}"
        if verdict is None:
            self.record(f"Request{req.action.title().replace('-', '')}", f"{req.action} accepted ({who})")
        else:
            self.record("RequestRejected", f"{req.action} rejected ({who}): {verdict}", warning=True)

    def policy_forbids_skip(self) -> str | None:
        """A promote skips bake time; under a policy with minBake the current wave must have baked that long."""
        policy = self.s.get("policy")
        rule = next((r for r in policy.rules if r.rule == "minBake"), None) if policy is not None else None
        if rule is None:
            return None
        stage = self.stage
        if stage == Stage.GATE:
            return None  # the wave's bake (at least minBake, see status.plan) is over
        baked = 0.0
        if stage == Stage.BAKE:
            baked = (float(self.s.get("baked_seconds") or 0.0) if self.spec.analysis is not None
                     else seconds_between(self.s["bake_started_at"], self.now))
        if baked >= parse_duration(rule.value):
            return None
        return (f"policy {', '.join(rule.set_by)} requires every wave to bake {rule.value}; wave "
                f"{self.wave_label()} has baked {int(baked)}s")

