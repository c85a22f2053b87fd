"""The pre-flight gates inside a decision: hold in Pending until they clear, record what held."""

from __future__ import annotations

from guarded.core import conditions as cond
from guarded.core import gates
from guarded.core.step import (
    Step,
)


class Preflight(Step):
    def pass_gates(self) -> gates.GateOutcome | None:
        """Evaluate the pre-flight gates; None while any holds the rollout (it proceeds by itself later)."""
        if self.obs.guard is None:
            self.wait(0.0)  # the shell gathers what the gates need on the next reconcile
            return None
        outcome = gates.evaluate(self.spec, self.obs)
        self.gates_judged = True
        before = {(g.gate, g.reason, g.message) for g in self.s["gates"] if not g.passed}
        seen_before = {(a.name, a.counted, a.reason) for a in self.s["approvals"]}
        self.s.update(gates=outcome.gates, approvals=outcome.approvals, policy=outcome.policy,
                      blast_radius=outcome.blast_radius, validation=outcome.findings, authors=outcome.authors)
        self.condition(cond.VALIDATED, outcome.validated.ok, outcome.validated.reason, outcome.validated.message)
        self.condition(cond.ADMITTED, outcome.admitted.ok, outcome.admitted.reason, outcome.admitted.message)
        self.condition(cond.APPROVED, outcome.approved.ok, outcome.approved.reason, outcome.approved.message)
        for a in outcome.approvals:
            if (a.name, a.counted, a.reason) not in seen_before:
                if a.counted:
                    self.record("ApprovalCounted", f"{a.approver} ({', '.join(a.groups) or 'no groups'}) approved "
                                f"revision {a.revision} ({a.name})")
                else:
                    self.record("ApprovalNotCounted", f"{a.approver}'s approval {a.name} does not count: {a.reason}",
                                warning=True)
        failing = outcome.failing()
        now_failing = {(g.gate, g.reason, g.message) for g in failing}
        if now_failing != before and failing:
            reason = "AwaitingApproval" if all(g.gate == "Approvals" for g in failing) else "Blocked"
            self.record(reason, "; ".join(f"{g.gate}: {g.message}" for g in failing), warning=reason == "Blocked")
        if failing:
            self.wait(5.0)
            return None
        if not self.s.get("paused"):
            self.record("GatesPassed", "; ".join(f"{g.gate}: {g.message}" for g in outcome.gates if g.message))
        return outcome

