"""The wave engine: decide(spec, status, observations) -> Decision. Pure and deterministic.

One reconcile of the operator is observe -> decide -> act. This module is the middle step and is
"a purely computational function with no side-effects" (as kopf says of its own cause detection):
the clock arrives in `observations.now`, the cluster arrives as DeploymentState values, and the
result is a set of absolute actions ("canary to 3 replicas"), the next status and the events to
emit. Replaying the same inputs gives the same decision, which is what lets the status explain
every step, lets thousands of property tests run without a cluster, and lets a killed operator
resume: the next decide() from the persisted status asks for the same absolute targets.

Read decide() top to bottom: each check and each stage is a function (inputs, draft) -> draft; the
stage functions are in core/stages.py (`STAGES`), requests in core/requests.py, gates in
core/preflight.py, analysis in core/judging.py, conditions and the message in core/summary.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from guarded.api.reasons import Reason
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core import routing
from guarded.core.actions import Action, DeleteDeployment, Event, ReleaseTarget, ScaleDeployment, Transition
from guarded.core.analysis import analysis_due
from guarded.core.consumers import check_consumers, check_parent, is_parent, statuses, track_consumers
from guarded.core.draft import Draft, Inputs, canary_target, rollout_revision, template_hash, total, wave_label
from guarded.core.judging import analyze
from guarded.core.moves import restart, rollback, target_promoted
from guarded.core.observations import Observations
from guarded.core.requests import handle_request
from guarded.core.stages import STAGES
from guarded.core.summary import summary, update_conditions
from guarded.core.templates import canary_name
from guarded.core.waves import percent
from guarded.core.workloads import (
    canary_current,
    canary_foreign,
    canary_ours,
    claim_of,
    claim_target,
    claims_target,
    holder,
    owns_canary,
    release_target,
    remove_canary,
    stable_restored,
)

MAX_STEPS = 8  # a decision may pass through several stages; each step is bounded


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: GuardedRolloutStatus
    events: tuple[Event, ...]
    requeue_after: float | None  # None: nothing to wait for but a change
    transitions: tuple[Transition, ...] = ()  # the positions passed, in order (the operator's metrics)


@dataclass(frozen=True)
class Needs:
    """What the shell must observe for the next decision (it fetches this and nothing else)."""

    analysis: bool  # an analysis judgement is due: query Prometheus
    gates: bool     # the rollout waits to start (or its spec changed): gather what the gates read


def needs(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, generation: int, now: datetime) -> Needs:
    return Needs(analysis=analysis_due(spec, status, now),
                 gates=status.stage == Stage.PENDING or status.observed_generation != generation)


def decide(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations) -> Decision:
    inp = Inputs.of(spec, status, obs)
    d = Draft(status=status).update(observed_generation=obs.generation, waves_total=len(status.plan or spec.waves))
    if d.stage == Stage.PENDING:
        d = d.update(gates=[])  # judged anew in pending() if it gets there; stale gates must not hold a queue slot
    if d.stage.in_wave and target_promoted(inp, d):
        # Our own PromoteTarget was carried out but the status saying so was never written (the operator
        # stopped in between): the waves are over, so resume in Promote, before any request is judged
        # against the stale stage, and instead of holding on a changed template.
        d = d.goto(Stage.PROMOTE).record(inp, Reason.PROMOTING, f"the target already runs revision "
                                         f"{d.status.revision}: resuming the promotion whose status was not written")
    last = d.status.last_request
    if obs.request is not None and (last is None or last.id != obs.request.id):
        d = handle_request(inp, d, obs.request)
    # A shared change: linked rollouts roll back together, first of all (a consumer whose Deployment is gone
    # still removes its canary when its parent rolls back).
    d = check_consumers(inp, check_parent(inp, d))
    d, go_on = check_target(inp, d)
    if go_on:
        d, go_on = check_exclusive(inp, d)
    if go_on:
        d = check_revision(inp, d)
        d, go_on = check_target_unchanged(inp, d)
    if go_on:
        d = run_stages(inp, analyze(inp, d), wave_before=status.wave)
        d = track_consumers(inp, d)
    return finish(inp, d)


def run_stages(inp: Inputs, d: Draft, *, wave_before: int | None) -> Draft:
    """Step through stages until one holds.

    The decision that starts the rollout, or moves to the next wave, stops there and asks to decide
    again at once (requeue 0), so that the stable is lowered only by a decision whose input status
    already holds stable_replicas, and a wave is sized only by one whose input status names that wave.
    Were such a status never written (the operator stopped, or the write conflicted), the next decision
    would otherwise start from a status behind the cluster: take a lowered stable for the original count
    (a crash loop could scale the target to zero), or shrink a canary that already has the next wave's
    size while the stable stays lowered (below capacity and above the weight bound)."""
    started = False
    for _ in range(MAX_STEPS):
        if wave_before is not None and d.status.wave is not None and d.status.wave > wave_before:
            return d.wait(0.0)  # advanced (by its bake, or by a promote request)
        before = d.stage
        d = STAGES[before](inp, d)
        if d.stage == before:
            return d
        started = started or (before == Stage.PENDING and d.stage == Stage.SCALE_CANARY)
        if started and d.stage != Stage.SCALE_CANARY:
            return d.wait(0.0)
    return d


# -- checks before the stages: each says whether the stages may run ---------------------------------

def check_target(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    t, name = inp.obs.target, inp.spec.target.name
    if t is not None and not t.deleting:
        return d.condition(inp, cond.TARGET_FOUND, True, Reason.FOUND, f"Deployment {name!r} found"), True
    d = d.condition(inp, cond.TARGET_FOUND, False, Reason.TARGET_NOT_FOUND,
                    f"spec.target.name: Deployment {name!r} not found in namespace {inp.obs.namespace!r}")
    if d.stage.cleaning:
        d = remove_canary(inp, d)  # stopping the bleeding does not need the target
    return d.wait(5.0), False


def check_exclusive(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    """At most one rollout acts on a target: the one whose claim its annotation carries.

    A rollout claims the target when it starts and releases it when it ends. While another live
    rollout holds it, this one may judge its gates but never starts or touches a workload; a
    Deployment by the canary's name that this rollout does not own is never scaled or deleted.
    """
    stage, other, c = d.stage, holder(inp), inp.obs.canary
    if stage.terminal:
        d = release_target(inp, d)
        return d.condition(inp, cond.TARGET_EXCLUSIVE, True, Reason.RELEASED,
                           "the rollout has ended and holds no target"), True
    if other is not None:
        d = d.condition(inp, cond.TARGET_EXCLUSIVE, False, Reason.HELD_BY_ROLLOUT,
                        f"spec.target.name: Deployment {inp.spec.target.name!r} is held by GuardedRollout "
                        f"{other.name!r}, which is rolling out a change to it; this rollout waits until that "
                        "one ends (or delete it)")
    elif c is not None and not c.deleting and canary_foreign(inp):
        d = d.condition(inp, cond.TARGET_EXCLUSIVE, False, Reason.CANARY_NOT_OWNED,
                        f"spec.target.name: Deployment {c.name!r} exists and is not owned by this rollout "
                        "(no controller ownerReference with its uid); it is never changed or deleted by "
                        "this rollout: remove or rename it")
    else:
        if stage != Stage.PENDING:
            d = claim_target(inp, d)  # a rollout under way holds its target (a claim lost or never written)
        return d.condition(inp, cond.TARGET_EXCLUSIVE, True, Reason.EXCLUSIVE,
                           "no other rollout holds the target"), True
    if stage.cleaning and other is not None:
        d = remove_canary(inp, d)  # our own canary may always go; the target is not ours to scale
    return d.wait(5.0), stage == Stage.PENDING  # judge the gates meanwhile; never act on the workload


def check_revision(inp: Inputs, d: Draft) -> Draft:
    """A spec change: mid-wave the canary retires and the new revision starts from wave 1."""
    current, stage = d.status.revision, d.stage
    if current is None or current == inp.revision:
        return d
    if stage.in_wave:
        d = d.record(inp, Reason.SPEC_CHANGED, f"spec changed during wave {wave_label(inp, d.status)}: retiring "
                     f"the canary of revision {current} and starting revision {inp.revision} from wave 1")
        return d.goto(Stage.RETIRING)
    if stage.terminal:
        d = d.record(inp, Reason.NEW_REVISION, f"spec changed: rolling out revision {inp.revision}")
        return restart(inp, d)
    if stage == Stage.PENDING:
        return restart(inp, d)
    # Promote/Cleanup finish first (the target already runs the old change); RollingBack and Retiring
    # finish removing the canary; the new revision starts after them.
    return d


def check_target_unchanged(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    """Mid-wave the target's template must be the one recorded at the start (someone else changed it?)."""
    t = inp.obs.target
    assert t is not None
    recorded = d.status.stable_template_hash
    if not d.stage.in_wave:
        return d, True
    seen = template_hash(t.template)
    if recorded is None or seen == recorded:
        return d.condition(inp, cond.TARGET_UNCHANGED, True, Reason.UNCHANGED,
                           "the target's pod template is as recorded"), True
    d = d.condition(inp, cond.TARGET_UNCHANGED, False, Reason.TARGET_TEMPLATE_CHANGED,
                    f"spec.target.name: the pod template of Deployment {t.name!r} was changed by someone else "
                    f"during the rollout (template {recorded} became {seen}); holding: restore it or abort")
    return d.wait(5.0), False


# -- the end of every decision ----------------------------------------------------------------------

def finish(inp: Inputs, d: Draft, *, recovered: bool = True) -> Decision:
    if recovered and cond.is_true(d.status.conditions, cond.RECONCILE_FAILED):
        d = d.condition(inp, cond.RECONCILE_FAILED, False, Reason.RECOVERED, "reconciles succeed again")
    if d.stage.terminal:
        d = release_target(inp, d)  # in the decision that ends the rollout, so later ones act on nothing
    if d.stage.terminal or d.stage == Stage.PENDING:
        d = routing.tidy(inp, d, canary_gone=not canary_ours(inp))
    d = update_conditions(inp, d)
    d = routing.observed(inp, d)
    d = d.update(**replica_counts(inp, d))
    d = d.update(phase=cond.derive_phase(d.status.conditions))
    d = d.update(message=summary(inp, d))
    if is_parent(inp):
        d = d.update(consumers=statuses(inp, d))
    return Decision(actions=d.actions, status=d.status, events=d.events, requeue_after=d.requeue,
                    transitions=d.transitions)


def replica_counts(inp: Inputs, d: Draft) -> dict[str, object]:
    """canaryWeight, canaryReplicas and waveProgress as the cluster shows them now."""
    stage, c, t = d.stage, inp.obs.canary, inp.obs.target
    canary_ready = c.ready if c is not None and canary_current(inp, d) else 0
    routed = d.status.traffic
    if routed is not None and (stage.in_wave or stage.promoting or stage.cleaning):
        # Routed by weight: the share is the route's, not the pods'.
        return {"canary_weight": routed.weight or 0, "canary_replicas": canary_ready,
                **({"wave_progress": wave_label(inp, d.status)} if stage.in_wave or stage.promoting else {})}
    if stage.in_wave or stage.promoting:
        return {"canary_weight": percent(canary_ready, t.ready if t is not None else 0),
                "canary_replicas": canary_ready, "wave_progress": wave_label(inp, d.status)}
    if stage.terminal or stage.cleaning:
        return {"canary_weight": 100 if stage == Stage.SUCCEEDED else 0,
                "canary_replicas": canary_ready if stage == Stage.ROLLING_BACK else 0}
    return {}


# -- when the shell could not decide: an error, or a deletion ----------------------------------------

def decide_fail_safe(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations,
                     error: str) -> Decision:
    """A reconcile failed with an unexpected error: never leave the workload half-changed.

    In a wave the rollout rolls back with reason OperatorError: the stable is restored to its count
    first and the canary removed once the stable is Ready again (nothing judged the canary bad, so
    capacity comes first). Elsewhere nothing of the workload is ours to restore, so it holds. Either
    way the ReconcileFailed condition names the error until a reconcile succeeds again.
    """
    inp = Inputs.of(spec, status, obs)
    d = Draft(status=status)
    stage = d.stage
    if stage.in_wave:
        d = rollback(inp, d, Reason.OPERATOR_ERROR, f"wave {wave_label(inp, d.status)}: the operator failed: {error}")
        done = f"rolled back to {total(d.status)} stable pods"
    elif stage.cleaning:
        done = f"removing the canary and restoring {total(d.status)} stable pods"
    else:
        done = "holding; the workload was not changed"
    message = f"{error}; {done}"
    before = cond.get(d.status.conditions, cond.RECONCILE_FAILED)
    d = d.condition(inp, cond.RECONCILE_FAILED, True, Reason.UNEXPECTED_ERROR, message)
    if before is None or before.status != "True" or before.message != message:
        d = d.emit(Event(type="Warning", reason=str(Reason.RECONCILE_FAILED), message=message))
    restore = stage.in_wave or stage.cleaning
    for action in decide_cleanup(d.status, obs, restore=restore, release=False,
                                 remove_canary=stable_restored(inp, d)):
        d = d.act(action)
    return finish(inp, d.wait(2.0), recovered=False)


def decide_cleanup(status: GuardedRolloutStatus, obs: Observations, *, restore: bool | None = None,
                   release: bool = True, remove_canary: bool = True) -> tuple[Action, ...]:
    """What deleting a GuardedRollout (or an operator error) must undo: its canary goes, the stable
    gets its pods back, the target's claim is released. Only what this rollout owns is touched."""
    c, t, claim = obs.canary, obs.target, claim_of(obs)
    # Routed by weight: the canary's weight to 0 before anything else; the route, the canary Service and the
    # stable's selector as they were once no canary pod is left (decided again until it is: see clean_up()).
    withdraw, withdrawn = routing.withdraw_actions(status, obs)
    actions: list[Action] = list(withdraw)
    if remove_canary and withdrawn and c is not None and not c.deleting and owns_canary(obs):
        actions.append(DeleteDeployment(name=c.name, uid=c.uid))
    if c is None:
        actions += routing.unwind_actions(status, obs)[0]
    ours = claims_target(obs)
    if restore is None:
        restore = status.stage.in_wave or status.stage.cleaning
    if ours and restore and status.stable_replicas and t is not None and t.replicas != status.stable_replicas:
        actions.append(ScaleDeployment(name=t.name, replicas=status.stable_replicas, rollout_uid=obs.uid))
    if release and ours and t is not None and claim is not None:
        actions.append(ReleaseTarget(name=t.name, value=claim))
    return tuple(actions)


__all__ = ["Decision", "Needs", "canary_name", "canary_ours", "canary_target", "decide", "decide_cleanup",
           "decide_fail_safe", "needs", "rollout_revision", "template_hash"]
