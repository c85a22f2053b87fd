"""The pre-flight gates a rollout passes before wave 1. Pure: one function of spec, observations and time.

Gates, in the order they are reported:
  Validation     dry run + template rules (core/validation)        -> Validated=False, phase Blocked
  Documentation  fields the policies require                        -> Admitted=False,  phase Blocked
  Metrics        guards the policies require in spec.analysis       -> Admitted=False,  phase Blocked
  Freeze         a freeze window of a governing policy is open      -> Admitted=False,  phase Blocked
  BlastRadius    pods and service share; above the line needs seniors (always passes, informs Approvals)
  Approvals      distinct non-author approvers of this revision     -> Approved=False,  phase AwaitingApproval
  Concurrency    slots under each policy's maxConcurrent, in order  -> Admitted=False,  phase Blocked
Concurrency is judged last, and only when every other gate passes, so that a rollout still waiting
for approval does not hold a place in the queue.

When all pass, the plan is fixed: spec.waves with the first wave lowered to the policies' limit and
every bake raised to their minimum. The engine records it in status.plan at start, so a policy edited
mid-rollout does not reshape waves already under way.

An emergency release (spec.emergency, break glass) is judged by the same gates with two rules changed
(core/policy.for_emergency): every bake in the plan is at most the emergency minimum (emergencyBake, 30s
by default; minBake still raises a shorter one up to it), and at least one approval by someone other
than an author is required even where no policy asks for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic.alias_generators import to_snake

from guarded.api.common import parse_duration
from guarded.api.policy import BUILTIN_METRICS
from guarded.api.rollout import (
    ApprovalSeen,
    BlastRadius,
    GateRecord,
    GuardedRolloutSpec,
    PolicyStatus,
    ValidationFinding,
    Wave,
)
from guarded.core import config_checks, validation
from guarded.core import policy as pol
from guarded.core.analysis import effective_metrics
from guarded.core.config_checks import ConfigContent
from guarded.core.config_refs import is_version_of, rewrite
from guarded.core.observations import GuardObservation, Observations
from guarded.core.templates import ChangeError, changed_template
from guarded.core.waves import canary_replicas


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """What a group of gates says of the rollout (the Validated, Admitted and Approved conditions): whether
    it may go on, and why."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class GateOutcome:
    gates: list[GateRecord]
    validated: GateResult
    admitted: GateResult
    approved: GateResult
    findings: list[ValidationFinding] = field(default_factory=list)
    approvals: list[ApprovalSeen] = field(default_factory=list)
    policy: PolicyStatus | None = None
    blast_radius: BlastRadius | None = None
    plan: list[Wave] = field(default_factory=list)
    plan_notes: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    emergency: bool = False   # an emergency release: shortened bakes, at least one approval
    emergency_note: str = ""  # what its start records (Reason.EMERGENCY_RELEASE): the bakes it shortened

    @property
    def clear(self) -> bool:
        return self.validated.ok and self.admitted.ok and self.approved.ok

    def failing(self) -> list[GateRecord]:
        return [g for g in self.gates if not g.passed]


def evaluate(spec: GuardedRolloutSpec, obs: Observations) -> GateOutcome:
    guard = obs.guard or GuardObservation()
    target = obs.target
    assert target is not None
    # A shared change is governed by every policy that selects any Deployment it moves.
    label_sets = [target.labels, *(found[2] for found in guard.consumers.values() if found is not None)]
    governing = {p.name: p for labels in label_sets
                 for p in pol.matching(guard.policies, namespace_labels=guard.namespace_labels, target_labels=labels)}
    rules = pol.combine([governing[n] for n in sorted(governing)], obs.now)
    if spec.emergency:
        rules = pol.for_emergency(rules)
    gates: list[GateRecord] = []

    findings = _validate(spec, obs, guard) + _check_config(spec, obs, guard, rules) + _consumers(spec, guard)
    gates.append(_gate("Validation", not findings, findings[0].rule if findings else "Passed",
                       "; ".join(f"{f.field}: {f.message}" for f in findings) or "the change passed every check"))

    docs = [d for d in sorted(rules.documentation) if not (getattr(spec, to_snake(d)) or "").strip()]
    gates.append(_gate("Documentation", not docs, "DocumentationMissing" if docs else "Passed",
                       "; ".join(f"spec.{d} is required by {', '.join(rules.documentation[d])}" for d in docs)))

    have = _guards(spec)
    missing = [f"spec.analysis must guard {m!r} ({_how(m)}), required by {', '.join(rules.metrics[m])}"
               for m in sorted(rules.metrics) if m not in have]
    missing += pol.missing_detection(rules, [(d.metric, d.degradation, d.power)
                                             for d in (spec.analysis.detect if spec.analysis else [])])
    if rules.detection and len(spec.waves) < 2:  # the power is gathered in the wave before the last: none here
        by = sorted({p for rule in rules.detection.values() for p in rule.set_by})
        missing.append(f"spec.waves has {len(spec.waves)} wave: a required detection needs a wave before the last "
                       f"to gather its power, required by {', '.join(by)}")
    gates.append(_gate("Metrics", not missing, "MetricsMissing" if missing else "Passed", "; ".join(missing)))

    unreadable = pol.unreadable_matching(guard.unreadable_policies, namespace_labels=guard.namespace_labels,
                                         target_labels=target.labels)
    gates.append(_gate("Policies", not unreadable, "PolicyUnreadable" if unreadable else "Passed", "; ".join(
        f"RolloutPolicy {u.name} may govern this rollout but this operator cannot read it ({u.error}); holding "
        "until it is fixed or the operator upgraded" for u in unreadable)))

    frozen = rules.freezes
    gates.append(_gate("Freeze", not frozen, "Frozen" if frozen else "Passed", "; ".join(
        f"policy {f.policy}: change freeze until {f.window.end}" + (f" ({f.window.reason})" if f.window.reason else "")
        for f in frozen)))

    blast = _blast_radius(obs, guard, rules)
    gates.append(_gate("BlastRadius", True, "High" if blast.high else "WithinLine", blast.reason))

    authors = list(guard.authors or ())
    seen, approved = _approvals(spec, obs, guard, rules, blast)
    gates.append(_gate("Approvals", approved.ok, approved.reason, approved.message))

    plan, notes, emergency_note = _plan(spec, rules, target.replicas)
    others_ok = all(g.passed for g in gates)
    if others_ok:
        gates.append(_concurrency(obs, guard, rules))
    concurrency_ok = all(g.passed for g in gates if g.gate == "Concurrency")

    blocking = [g for g in gates if not g.passed
                and g.gate in ("Documentation", "Metrics", "Policies", "Freeze", "Concurrency")]
    admitted = GateResult(ok=not blocking and concurrency_ok,
                          reason=blocking[0].reason if blocking else "Admitted",
                          message="; ".join(g.message for g in blocking) or "every policy rule is met")
    validated = GateResult(ok=not findings, reason=gates[0].reason, message=gates[0].message)
    return GateOutcome(gates=gates, validated=validated, admitted=admitted, approved=approved, findings=findings,
                       approvals=seen, policy=pol.describe(rules), blast_radius=blast, plan=plan, plan_notes=notes,
                       authors=authors, emergency=spec.emergency, emergency_note=emergency_note)


def _gate(name: str, passed: bool, reason: str, message: str) -> GateRecord:
    return GateRecord(gate=name, passed=passed, reason=reason, message=message)


def _validate(spec: GuardedRolloutSpec, obs: Observations, guard: GuardObservation) -> list[ValidationFinding]:
    assert obs.target is not None
    try:
        template = rewrite(changed_template(obs.target.template, spec.change, "validation"),
                           {(c.kind, c.name): c.version for c in obs.config if c.version})
    except ChangeError as err:
        return [ValidationFinding(rule="ChangeApplies", field="spec.change", message=str(err))]
    findings = validation.check_template(spec, template, replicas=obs.target.replicas)
    if not guard.dry_run_done:
        findings.insert(0, ValidationFinding(rule="DryRunPending", field="spec.change",
                                             message="the server-side dry run has not been done yet"))
    elif guard.dry_run_error:
        findings.insert(0, validation.dry_run_finding(guard.dry_run_error))
    return findings


def _consumers(spec: GuardedRolloutSpec, guard: GuardObservation) -> list[ValidationFinding]:
    """Every consumer of a shared change exists and reads what the change names."""
    findings = []
    names = [(kind, name) for kind, items in (("ConfigMap", spec.change.config_maps), ("Secret", spec.change.secrets))
             for name in (c.name for c in items)]
    for i, consumer in enumerate(spec.consumers):
        found = guard.consumers.get(consumer.name)
        field = f"spec.consumers[{i}].name"
        if found is None:
            findings.append(ValidationFinding(rule="ConsumerNotFound", field=field,
                                              message=f"Deployment {consumer.name!r} not found"))
            continue
        reads_none = [f"{k} {n}" for k, n in names if not any(rk == k and is_version_of(rn, n) for rk, rn in found[1])]
        if reads_none:
            findings.append(ValidationFinding(rule="ConsumerDoesNotRead", field=field, message=(
                f"the pod template of Deployment {consumer.name!r} does not read {', '.join(reads_none)}")))
    return findings


def _check_config(spec: GuardedRolloutSpec, obs: Observations, guard: GuardObservation,
                  rules: pol.EffectiveRules) -> list[ValidationFinding]:
    """The policies' configValidation on the new content of every changed ConfigMap (AppConfig's validators)."""
    content = {c.name: c.content for c in obs.config if c.kind == "ConfigMap" and c.content is not None}
    changes = [ConfigContent(index=i, name=c.name, data=dict((content.get(c.name) or {}).get("data") or {}))
               for i, c in enumerate(spec.change.config_maps) if c.name in content]
    return config_checks.check(pol.config_validations(rules), changes, guard.config_schemas) if changes else []


def _guards(spec: GuardedRolloutSpec) -> set[str]:
    if spec.analysis is None:
        return set()
    names = {m.name for m in effective_metrics(spec.analysis)}
    return names | {alias for alias, name in BUILTIN_METRICS.items() if name in names}


def _how(metric: str) -> str:
    if metric in BUILTIN_METRICS:
        return {"orders": "set spec.analysis.requests and spec.analysis.orders",
                "latency": "set spec.analysis.latency"}.get(metric, "set spec.analysis.requests")
    return f"add spec.analysis.metrics[] named {metric!r}"


def _blast_radius(obs: Observations, guard: GuardObservation, rules: pol.EffectiveRules) -> BlastRadius:
    assert obs.target is not None
    # A shared change: every consumer's pods run it once promoted.
    pods = obs.target.replicas + sum(found[0] for found in guard.consumers.values() if found is not None)
    behind = guard.service_pods
    # No Service routes to the target (or none with a selector): as far as we can see the target is the
    # whole service, so its share is 100%. Unknown never counts as small.
    share = 100 if not behind else min(100, round(100 * pods / max(behind, pods)))
    over: list[str] = []
    if rules.blast_pods is not None and pods > rules.blast_pods.value:
        over.append(f"{pods} pods > {rules.blast_pods} ({', '.join(rules.blast_pods.set_by)})")
    if rules.blast_share is not None and share is not None and share > rules.blast_share.value:
        over.append(f"{share}% of the service > {rules.blast_share}% ({', '.join(rules.blast_share.set_by)})")
    where = f"{pods} pods, " + (f"{share}% of the {behind} pods behind its Services" if behind
                                else "100% (no Service routes to other pods)")
    reason = (f"high blast radius: {'; '.join(over)}" if over else f"{where}, within the policy line") \
        if rules.policies else where
    return BlastRadius(pods=pods, service_pods=behind, share_percent=share, namespaces=[obs.namespace],
                       high=bool(over), reason=reason)


def _approvals(spec: GuardedRolloutSpec, obs: Observations, guard: GuardObservation, rules: pol.EffectiveRules,
               blast: BlastRadius) -> tuple[list[ApprovalSeen], GateResult]:
    required = int(rules.required_approvals.value) if rules.required_approvals else 0
    senior_needed = (spec.ai_assisted or blast.high) and rules.senior
    authors = set(guard.authors or ())
    seen: list[ApprovalSeen] = []
    counted: dict[str, tuple[str, ...]] = {}
    for a in sorted(guard.approvals, key=lambda a: a.name):
        why = ""
        if not a.approver:
            why = "no approver identity (not admitted by the operator's webhook)"
        elif a.rollout_uid is None:
            why = "no rollout uid (not admitted by the operator's webhook)"
        elif a.rollout_uid != obs.uid:
            why = "approves an earlier rollout of the same name"
        elif a.revision != obs.generation:
            why = f"stale: approves revision {a.revision}, the spec is now at revision {obs.generation}"
        elif guard.authors is None:
            why = "the rollout's authors are unknown (it was not admitted by the operator's webhook)"
        elif a.approver in authors:
            why = "an author cannot approve their own change"
        elif a.approver in counted:
            why = f"{a.approver} already approved"
        if not why:
            counted[a.approver] = a.groups  # type: ignore[index]
        seen.append(ApprovalSeen(name=a.name, approver=a.approver or "?", groups=list(a.groups),
                                 revision=a.revision, counted=not why, reason=why))
    if not rules.policies and rules.required_approvals is None:
        return seen, GateResult(ok=True, reason="NotRequired", message="no policy requires approvals")
    missing: list[str] = []
    if len(counted) < required:
        missing.append(f"{len(counted)}/{required} approvals of revision {obs.generation} "
                       f"(required by {', '.join(rules.required_approvals.set_by)}; authors "  # type: ignore[union-attr]
                       f"{', '.join(sorted(authors)) or 'unknown'} cannot approve)")
    if senior_needed:
        why = "AI-assisted" if spec.ai_assisted else "high blast radius"
        for req in rules.senior:
            if not any(set(groups) & set(req.groups) for groups in counted.values()):
                missing.append(f"the change is {why}: an approval from a member of {', '.join(req.groups)} "
                               f"(required by {', '.join(req.set_by)})")
    if missing:
        return seen, GateResult(ok=False, reason="AwaitingApproval", message="waiting for " + "; ".join(missing))
    names = ", ".join(sorted(counted)) or "none needed"
    return seen, GateResult(ok=True, reason="Approved", message=f"approved by {names}")


def _plan(spec: GuardedRolloutSpec, rules: pol.EffectiveRules,
          replicas: int) -> tuple[list[Wave], list[str], str]:
    """The waves in effect, the notes on what the policies changed, and an emergency release's note."""
    waves = list(spec.waves)
    notes: list[str] = []
    first = waves[0]
    pods = canary_replicas(first, replicas)
    limits = []
    if rules.first_wave_replicas is not None:
        limits.append((int(rules.first_wave_replicas.value), rules.first_wave_replicas))
    if rules.first_wave_weight is not None:
        limits.append((canary_replicas(Wave(weight=int(rules.first_wave_weight.value)), replicas),
                       rules.first_wave_weight))
    if limits:
        cap, rule = min(limits, key=lambda x: x[0])
        if pods > cap:
            waves[0] = Wave(replicas=cap, bake=first.bake, manual_gate=first.manual_gate)
            notes.append(f"wave 1 lowered from {pods} to {cap} canary pods by {', '.join(rule.set_by)}")
    if spec.emergency and rules.emergency_bake is not None:
        waves, note = _emergency_bakes(waves, rules.min_bake, rules.emergency_bake)
        return waves, notes, note
    if rules.min_bake is not None:
        floor = rules.min_bake
        for i, wave in enumerate(waves):
            if parse_duration(wave.bake) < floor.value:
                waves[i] = wave.model_copy(update={"bake": floor.text})
                notes.append(f"wave {i + 1} bake raised from {wave.bake} to {floor.text} by "
                             f"{', '.join(floor.set_by)}")
    return waves, notes, ""


def _emergency_bakes(waves: list[Wave], floor: pol.Rule | None, cap: pol.Rule) -> tuple[list[Wave], str]:
    """Every bake at most the emergency minimum: min(max(bake, minBake), emergencyBake)."""
    out = []
    for wave in waves:
        seconds = parse_duration(wave.bake)
        bake = wave.bake
        if floor is not None and seconds < floor.value:
            bake, seconds = floor.text, float(floor.value)
        if seconds > cap.value:
            bake = cap.text
        out.append(wave if bake == wave.bake else wave.model_copy(update={"bake": bake}))
    note = (f"emergency release (spec.emergency): every wave bakes at most {cap.text} (emergencyBake, set by "
            f"{', '.join(cap.set_by)})")
    if floor is not None and floor.value > cap.value:
        note += f", not the {floor.text} of minBake ({', '.join(floor.set_by)})"
    before, after = [w.bake for w in waves], [w.bake for w in out]
    note += f": bakes {', '.join(before)} -> {', '.join(after)}" if before != after else \
        f": no wave bakes longer ({', '.join(after)})"
    return out, note


def _concurrency(obs: Observations, guard: GuardObservation, rules: pol.EffectiveRules) -> GateRecord:
    me = (guard.created, obs.namespace, obs.name)
    for policy, limit in sorted(rules.concurrency.items()):
        mine = [q for q in guard.queue if policy in q.policies and (q.namespace, q.name) != (obs.namespace, obs.name)]
        active = [q for q in mine if q.active]
        ahead = [q for q in mine if q.waiting and not q.active and (q.created, q.namespace, q.name) < me]
        if len(active) + len(ahead) >= limit.value:
            names = ", ".join(f"{q.namespace}/{q.name}" for q in active) or "none"
            return _gate("Concurrency", False, "ConcurrencyLimit",
                         f"policy {policy} allows {limit} rollouts at once: progressing {names}; "
                         f"{len(ahead)} ahead in the queue")
    return _gate("Concurrency", True, "Passed", "a slot is free" if rules.concurrency else "")
