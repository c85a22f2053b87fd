"""The pre-flight gates inside a decision: hold in Pending until they clear, record what held."""

from __future__ import annotations

from guarded.api.reasons import Reason
from guarded.core import conditions as cond
from guarded.core import gates
from guarded.core.consumers import child_gates
from guarded.core.draft import Draft, Inputs


def pass_gates(inp: Inputs, d: Draft) -> tuple[Draft, gates.GateOutcome | None]:
    """Evaluate the gates. The outcome is None while any holds the rollout (it starts by itself later)."""
    if inp.obs.guard is None:
        return d.wait(0.0), None  # the shell gathers what the gates need on the next reconcile
    outcome = gates.evaluate(inp.spec, inp.obs)
    if inp.obs.parent is not None:  # a consumer's rollout of a shared change: the gates are its parent's
        outcome = child_gates(inp, d, outcome)
    before = {(g.gate, g.reason, g.message) for g in inp.status.gates if not g.passed}
    seen_before = {(a.name, a.counted, a.reason) for a in d.status.approvals}
    d = d.update(gates=outcome.gates, approvals=outcome.approvals, policy=outcome.policy,
                 blast_radius=outcome.blast_radius, validation=outcome.findings, authors=outcome.authors,
                 emergency=outcome.emergency)
    for type_, result in ((cond.VALIDATED, outcome.validated), (cond.ADMITTED, outcome.admitted),
                          (cond.APPROVED, outcome.approved)):
        d = d.condition(inp, type_, result.ok, result.reason, result.message)
    for a in outcome.approvals:
        if (a.name, a.counted, a.reason) in seen_before:
            continue
        if a.counted:
            d = d.record(inp, Reason.APPROVAL_COUNTED, f"{a.approver} ({', '.join(a.groups) or 'no groups'}) "
                         f"approved revision {a.revision} ({a.name})")
        else:
            d = d.record(inp, Reason.APPROVAL_NOT_COUNTED, f"{a.approver}'s approval {a.name} does not count: "
                         f"{a.reason}", warning=True)
    failing = outcome.failing()
    if failing:
        if {(g.gate, g.reason, g.message) for g in failing} != before:
            reason = Reason.AWAITING_APPROVAL if all(g.gate == "Approvals" for g in failing) else Reason.BLOCKED
            d = d.record(inp, reason, "; ".join(f"{g.gate}: {g.message}" for g in failing),
                         warning=reason == Reason.BLOCKED)
        return d.wait(5.0), None
    if not d.status.paused:
        d = d.record(inp, Reason.GATES_PASSED, "; ".join(f"{g.gate}: {g.message}" for g in outcome.gates if g.message))
    return d, outcome
