"""A shared configuration change: one GuardedRollout moves every Deployment that reads it.

The rollout the user (or an edit of the ConfigMap) creates is the parent: it rolls the change out to
spec.target itself and makes one GuardedRollout per spec.consumers Deployment, owned by it and labelled
`part-of`. Those follow the parent in lockstep, read from observations only (no requests between them):

    parent wave:     1 (1 pod of spec.target)   2 (10%)    3 (50%)    4 (100%)    Promote
    consumer wave:   -  (waits in Pending)      1 (10%)    2 (50%)    3 (100%)    Promote

A consumer's rollout has the parent's waves after the first, each with a gate: it bakes a wave while the
parent bakes its own, then waits in Gate until the parent moves on. The parent advances only when every
consumer's rollout has baked (a fresh Pass on its own canary against its own stable pods) and waits in
Gate. A consumer's rollout that rolls back rolls the parent back, and the parent's rollback rolls every
consumer's rollout back. The gates (approvals, documentation, blast radius of all consumers, freezes) are
judged on the parent; a consumer's rollout is admitted because its parent names it (same change, the
derived waves, the parent's uid as controller owner), which a rollout a user writes cannot fake.
"""

from __future__ import annotations

from guarded.api.common import GROUP, VERSION, parse_duration
from guarded.api.reasons import Reason
from guarded.api.rollout import ConsumerStatus, GateRecord, GuardedRolloutSpec, Wave
from guarded.api.stages import Stage
from guarded.core.actions import CreateRollout, DeleteRollout
from guarded.core.clock import seconds_between, stamp
from guarded.core.draft import Draft, Inputs, waves
from guarded.core.gates import GateOutcome, GateResult
from guarded.core.moves import restart, rollback
from guarded.core.observations import LinkedRollout
from guarded.core.templates import content_hash

PART_OF_LABEL = f"{GROUP}/part-of"
WAIT = 2.0   # linked rollouts watch each other by polling: a parent's move does not wake its consumers


def child_name(parent: str, consumer: str) -> str:
    name = f"{parent}-{consumer}"
    return name if len(name) <= 253 else f"{name[:236]}-{content_hash(name)}"


def offset(plan: list[Wave]) -> int:
    """Parent waves run before the consumers start: the first, when there is more than one."""
    return 1 if len(plan) > 1 else 0


def child_spec(parent: GuardedRolloutSpec, plan: list[Wave], consumer: str) -> GuardedRolloutSpec:
    """The spec of a consumer's rollout: the parent's change and analysis on the consumer, the parent's waves
    after the first, each gated (the parent moves it on)."""
    wire = parent.to_wire()
    wire.pop("consumers", None)
    wire["target"] = {"name": consumer}
    wire["waves"] = [w.model_copy(update={"manual_gate": True}).to_wire() for w in plan[offset(plan):]]
    return GuardedRolloutSpec.model_validate(wire)


# -- the parent's side -----------------------------------------------------------------------------

def is_parent(inp: Inputs) -> bool:
    return bool(inp.spec.consumers)


def children(inp: Inputs) -> dict[str, LinkedRollout]:
    """The consumers' rollouts this one owns, by consumer Deployment."""
    out = {}
    for child in inp.obs.children:
        if child.owner_uid == inp.obs.uid and child.spec is not None and not child.deleting:
            out[child.spec.target.name] = child
    return out


def ensure_children(inp: Inputs, d: Draft) -> Draft:
    """Once started (the plan fixed), every consumer has its rollout of this spec; one of an earlier spec
    (the parent's spec was edited) is deleted (its own cleanup restores its Deployment) and made again."""
    plan = waves(inp, d.status)
    if not is_parent(inp) or not (d.stage.in_wave or d.stage.promoting) or not d.status.plan:
        return d
    have = children(inp)
    for consumer in inp.spec.consumers:
        child = have.get(consumer.name)
        if child is not None and _current(inp, d, child):
            continue
        if child is not None and child.uid is not None:
            d = d.act(DeleteRollout(name=child.name, uid=child.uid))
            continue
        d = d.act(CreateRollout(manifest={
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout",
            "metadata": {"name": child_name(inp.obs.name, consumer.name), "namespace": inp.obs.namespace,
                         "labels": {PART_OF_LABEL: part_of_value(inp.obs.name)},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout",
                                              "name": inp.obs.name, "uid": inp.obs.uid, "controller": True,
                                              "blockOwnerDeletion": False}]},
            "spec": child_spec(inp.spec, plan, consumer.name).to_wire(),
        }))
    return d


def part_of_value(parent: str) -> str:
    """The part-of label's value (label values are at most 63 characters; the parent is found by the owner)."""
    return parent if len(parent) <= 63 else f"{parent[:52]}-{content_hash(parent)[:10]}"


def _current(inp: Inputs, d: Draft, child: LinkedRollout) -> bool:
    return child.spec == child_spec(inp.spec, waves(inp, d.status), child.spec.target.name)


def consumers_gated(inp: Inputs, d: Draft) -> str | None:
    """None when the parent may leave its current wave: every consumer's rollout baked the matching wave and
    waits in Gate (or none is due yet); else what it waits for."""
    if not is_parent(inp):
        return None
    plan, wave = waves(inp, d.status), int(d.status.wave or 0)
    due = wave - offset(plan)
    if due < 0:
        return None
    have = children(inp)
    for consumer in inp.spec.consumers:
        child = have.get(consumer.name)
        s = child.status if child is not None else None
        if child is None or s is None or not _current(inp, d, child):
            return f"the rollout of consumer {consumer.name!r} is not there yet"
        if s.stage != Stage.GATE or s.wave != due:
            return f"consumer {consumer.name!r} at {s.stage} of wave {s.wave_progress or '-'}"
    return None


def consumers_done(inp: Inputs) -> str | None:
    """None once every consumer's rollout has succeeded; else which one is still going."""
    have = children(inp)
    for consumer in inp.spec.consumers:
        child = have.get(consumer.name)
        if child is None or child.status is None or child.status.stage != Stage.SUCCEEDED:
            return consumer.name
    return None


def failed_consumer(inp: Inputs, d: Draft) -> LinkedRollout | None:
    """A consumer's rollout that rolls back, or did in this attempt. One that rolled back before this attempt
    started is not a failure of it: it starts again once it sees this one did (check_parent)."""
    for child in children(inp).values():
        s = child.status
        if s is None or s.stage not in (Stage.ROLLING_BACK, Stage.ROLLED_BACK, Stage.FAILED):
            continue
        if s.stage == Stage.ROLLED_BACK and _restarts(s.completed_at, d.status.started_at):
            continue
        return child
    return None


def _restarts(ended: str | None, again: str | None) -> bool:
    """A consumer's rollout that ended at `ended` follows its parent's attempt started at `again`."""
    return bool(ended and again and again > ended)


def rollback_overdue(inp: Inputs, d: Draft) -> bool:
    """The parent has waited spec.progressDeadline for its consumers' rollouts to end their rollback."""
    began = next((h.time for h in reversed(d.status.history) if h.reason == Reason.ROLLING_BACK), None)
    return began is not None and seconds_between(began, inp.now) > parse_duration(inp.spec.progress_deadline)


def consumers_ended(inp: Inputs) -> bool:
    return all(c.status is None or c.status.stage.terminal or c.status.stage == Stage.PENDING
               for c in children(inp).values())


def check_consumers(inp: Inputs, d: Draft) -> Draft:
    """The parent: a consumer's rollout that rolls back rolls all back. Once the parent's own target is
    promoted it cannot roll back by itself: the change ends Failed, saying which consumer did not take it."""
    bad = failed_consumer(inp, d) if is_parent(inp) else None
    if bad is not None and d.stage.promoting and bad.status is not None and bad.status.stage.terminal:
        d = d.update(rollback_reason=str(Reason.CONSUMER_ROLLED_BACK), completed_at=stamp(inp.now))
        return d.goto(Stage.FAILED).record(
            inp, Reason.CONSUMER_ROLLED_BACK, f"the rollout of consumer {bad.spec.target.name!r} ({bad.name}) "
            f"rolled back ({bad.status.rollback_reason or 'rolled back'}) after {inp.spec.target.name!r} was "
            "promoted: the change runs on some consumers only; release the previous version (contentFrom) "
            "or fix and retry", warning=True)
    if bad is None or not d.stage.in_wave:
        return d
    why = bad.status.rollback_reason or "rolled back"
    return rollback(inp, d, Reason.CONSUMER_ROLLED_BACK, f"the rollout of consumer {bad.spec.target.name!r} "
                    f"({bad.name}) rolled back ({why}): rolling back every consumer")


def track_consumers(inp: Inputs, d: Draft) -> Draft:
    """The parent: its consumers' rollouts exist once it started."""
    return ensure_children(inp, d) if is_parent(inp) else d


def statuses(inp: Inputs, d: Draft) -> list[ConsumerStatus]:
    """Each consumer's progress, spec.target first (from this decision's status: call it last)."""
    s = d.status
    out = [ConsumerStatus(name=inp.spec.target.name, rollout=inp.obs.name, phase=str(s.phase), stage=str(s.stage),
                          wave_progress=s.wave_progress, canary_replicas=s.canary_replicas,
                          stable_replicas=s.stable_replicas)]
    have = children(inp)
    for consumer in inp.spec.consumers:
        child = have.get(consumer.name)
        cs = child.status if child is not None else None
        out.append(ConsumerStatus(
            name=consumer.name, rollout=child.name if child else child_name(inp.obs.name, consumer.name),
            phase=str(cs.phase) if cs else None, stage=str(cs.stage) if cs else None,
            wave_progress=cs.wave_progress if cs else None, canary_replicas=cs.canary_replicas if cs else None,
            stable_replicas=cs.stable_replicas if cs else None, message=(cs.message if cs else "")[:300]))
    return out


# -- a consumer's side -----------------------------------------------------------------------------

def parent_of(inp: Inputs) -> LinkedRollout | None:
    """The parent, when this rollout is a consumer's rollout it really made (None: a rollout of its own)."""
    p = inp.obs.parent
    if p is None or inp.obs.owner_uid is None or p.uid != inp.obs.owner_uid:
        return None
    return p


def linked(inp: Inputs) -> bool:
    """Made by its parent: the parent owns it (uid), lists its target among spec.consumers, and gives it this
    name and exactly this spec. A rollout written by hand that claims a parent fails one of these."""
    p = parent_of(inp)
    target = inp.spec.target.name
    return (p is not None and p.spec is not None and p.status is not None and not p.deleting
            and target in {c.name for c in p.spec.consumers} and inp.obs.name == child_name(p.name, target)
            and inp.spec == child_spec(p.spec, list(p.status.plan or p.spec.waves), target))


def parent_position(p: LinkedRollout) -> int:
    """The parent's wave; past the last while it promotes, cleans up or has succeeded."""
    s = p.status
    if s.stage.in_wave:
        return int(s.wave or 0)
    if s.stage in (Stage.PROMOTE, Stage.CLEANUP, Stage.SUCCEEDED):
        return len(s.plan or p.spec.waves)
    return -1


def parent_failed(p: LinkedRollout) -> bool:
    return p.deleting or (p.status is not None and p.status.stage in (Stage.ROLLING_BACK, Stage.ROLLED_BACK,
                                                                      Stage.FAILED))


def child_gates(inp: Inputs, d: Draft, outcome: GateOutcome) -> GateOutcome:
    """A consumer's rollout: its own Validation (the dry run on its Deployment), the rest is its parent's."""
    p = inp.obs.parent
    if not linked(inp) or p is None:
        name = p.name if p is not None else "?"
        return _part_of(outcome, False, Reason.NOT_PART_OF, f"labelled part of GuardedRollout {name!r}, which does "
                        "not own it with this spec: a consumer's rollout is made by its parent only")
    start = offset(list(p.status.plan or p.spec.waves))
    if parent_failed(p) or parent_position(p) < start:
        return _part_of(outcome, False, Reason.WAITING_FOR_PARENT, f"starts when GuardedRollout {p.name!r} "
                        f"reaches wave {start + 1} (it is at {p.status.stage}, {p.status.wave_progress or '-'})")
    return _part_of(outcome, True, Reason.PART_OF, f"part of GuardedRollout {p.name!r}, which passed the gates")


def _part_of(outcome: GateOutcome, ok: bool, reason: Reason, message: str) -> GateOutcome:
    validation = [g for g in outcome.gates if g.gate == "Validation"]
    gate = GateRecord(gate="PartOf", passed=ok, reason=str(reason), message=message)
    result = GateResult(ok=ok, reason=str(reason), message=message)
    return GateOutcome(gates=[*validation, gate], validated=outcome.validated, admitted=result,
                       approved=GateResult(ok=True, reason=str(reason), message="approved with its parent"),
                       findings=outcome.findings, plan=[], authors=outcome.authors)


def check_parent(inp: Inputs, d: Draft) -> Draft:
    """A consumer's rollout rolls back with its parent (one that never started ends so too), and starts again
    when its parent starts a new attempt after this one ended."""
    p = parent_of(inp)
    if p is None or p.status is None:
        return d
    if parent_failed(p) and (d.stage.in_wave or d.stage == Stage.PENDING):
        return rollback(inp, d, Reason.PARENT_ROLLED_BACK, f"GuardedRollout {p.name!r}, which this one is part "
                        f"of, rolls back ({p.status.rollback_reason or 'deleted'})")
    ended, again = d.status.completed_at, p.status.started_at
    if d.stage == Stage.ROLLED_BACK and _restarts(ended, again) and not parent_failed(p):
        return restart(inp, d.record(inp, Reason.NEW_REVISION, f"GuardedRollout {p.name!r} started again: "
                                     "this consumer's rollout follows it"))
    return d


def gate_passed(inp: Inputs, d: Draft) -> bool:
    """A consumer's rollout waiting in Gate: its parent has moved past the matching wave."""
    p = parent_of(inp)
    if p is None or not linked(inp):
        return False
    return parent_position(p) > int(d.status.wave or 0) + offset(list(p.status.plan or p.spec.waves))


__all__ = [
    "PART_OF_LABEL",
    "check_consumers",
    "check_parent",
    "child_gates",
    "child_name",
    "child_spec",
    "consumers_done",
    "consumers_ended",
    "consumers_gated",
    "gate_passed",
    "is_parent",
    "linked",
    "offset",
    "parent_of",
    "part_of_value",
    "statuses",
    "track_consumers",
]

