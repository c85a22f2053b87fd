"""The wave engine: decide(spec, status, observations) -> Decision. Pure and deterministic.

One reconcile of the operator is observe -> decide -> act. This module is the middle step and is
"a purely computational function with no side-effects" (as kopf says of its own cause detection):
the clock arrives in `observations.now`, the cluster arrives as DeploymentState values, and the
result is a set of absolute actions ("canary to 3 replicas"), the next status and the events to
emit. Replaying the same inputs gives the same decision, which is what lets the status explain
every step, lets thousands of property tests run without a cluster, and lets a killed operator
resume: the next decide() from the persisted status asks for the same absolute targets.

Stages, in order:  Pending -> [ScaleCanary -> ScaleStable -> Bake (-> Gate)] per wave
                   -> Promote -> Cleanup -> Succeeded
and from any progress stage -> RollingBack -> RolledBack (abort, deadline, later: analysis),
or -> Retiring -> Pending when the spec changes mid-rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from guarded.api.common import parse_duration
from guarded.api.rollout import (
    AnalysisStatus,
    GuardedRolloutSpec,
    GuardedRolloutStatus,
    Stage,
)
from guarded.core import conditions as cond
from guarded.core.clock import seconds_between, stamp
from guarded.core.judges import Verdict
from guarded.core.judging import Judging
from guarded.core.model import (
    Action,
    DeleteDeployment,
    Event,
    Observations,
    PromoteTarget,
    ReleaseTarget,
    ScaleDeployment,
)
from guarded.core.preflight import Preflight
from guarded.core.requests import Requests
from guarded.core.step import (
    CLEANING_STAGES,
    GUARDED_STAGES,
    POLL_SECONDS,
    TERMINAL_STAGES,
    WAVE_STAGES,
    rollout_revision,
    template_hash,
)
from guarded.core.summary import Summary
from guarded.core.templates import (
    REVISION_ANNOTATION,
    ChangeError,
    canary_name,
    changed_template,
    claim_value,
)
from guarded.core.waves import canary_replicas, percent

# Rollbacks of a canary that nothing judged bad: the stable is restored before the canary goes.
CAPACITY_FIRST_REASONS = frozenset({"OperatorError", "InvalidSpec"})


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: GuardedRolloutStatus
    events: tuple[Event, ...]
    requeue_after: float | None  # None: nothing to wait for but a change




def decide(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations) -> Decision:
    return _Reconcile(spec, status, obs).run()


class _Reconcile(Requests, Preflight, Judging, Summary):
    """One decision: built, run once, thrown away. Its parts live in the mixins over core.step.Step."""

    def run(self) -> Decision:
        self.s["observed_generation"] = self.obs.generation
        self.s["waves_total"] = len(self.waves)
        if self.stage in GUARDED_STAGES and self.target_promoted():
            # Our own PromoteTarget was carried out but the status saying so was never written (the
            # operator stopped in between): the waves are over, so resume in Promote (before any
            # request is judged against the stale stage, and instead of holding on a changed template).
            self.goto(Stage.PROMOTE)
            self.record("Promoting", f"the target already runs revision {self.s['revision']}: resuming the "
                        "promotion whose status was not written")
        request = self.obs.request
        last = self.s.get("last_request")
        if request is not None and (last is None or last.id != request.id):
            self.handle_request(request)

        if not self.check_target():
            return self.finish()
        if not self.check_exclusive():
            return self.finish()
        self.check_revision()
        if self.stage in GUARDED_STAGES and not self.check_target_unchanged():
            return self.finish()
        self.analyze()

        # Record before acting: the decision that starts the rollout or moves to the next wave stops
        # there and asks to decide again at once (requeue 0), so that the stable is lowered only by a decision
        # whose input status already holds stable_replicas, and a wave is sized only by one whose
        # input status already names that wave. Were such a decision's status never written (the
        # operator stopped, or the write conflicted), the next one would otherwise start from a status
        # behind the cluster: take a lowered stable for the original count (a crash loop could scale the
        # target to zero), or shrink a canary that already has the next wave's size while the stable
        # stays lowered (below capacity and above the weight bound).
        for _ in range(8):  # a decision may pass through several stages; each step is bounded
            if self.advanced:
                self.wait(0.0)
                break
            before = self.stage
            self.step()
            if self.stage == before:
                break
            if self.started and self.stage != Stage.SCALE_CANARY:
                self.wait(0.0)
                break
        return self.finish()

    def step(self) -> None:
        handler = {
            Stage.PENDING: self.pending,
            Stage.SCALE_CANARY: self.scale_canary,
            Stage.SCALE_STABLE: self.scale_stable,
            Stage.BAKE: self.bake,
            Stage.GATE: self.gate,
            Stage.PROMOTE: self.promote,
            Stage.CLEANUP: self.cleanup,
            Stage.ROLLING_BACK: self.clean_up_to(Stage.ROLLED_BACK),
            Stage.RETIRING: self.clean_up_to(Stage.PENDING),
        }.get(self.stage)
        if handler is not None:
            handler()

    # -- checks ----------------------------------------------------------------------------
    def check_target(self) -> bool:
        t = self.obs.target
        name = self.spec.target.name
        if t is not None and not t.deleting:
            self.condition(cond.TARGET_FOUND, True, "Found", f"Deployment {name!r} found")
            return True
        self.condition(cond.TARGET_FOUND, False, "TargetNotFound",
                       f"spec.target.name: Deployment {name!r} not found in namespace {self.obs.namespace!r}")
        if self.stage in CLEANING_STAGES:
            self.remove_canary()  # stopping the bleeding does not need the target
        self.wait(5.0)
        return False

    def check_exclusive(self) -> bool:
        """At most one rollout acts on a target: the one whose claim its annotation carries.

        A rollout claims the target when it starts and releases it when it ends. While another live
        rollout holds it, this one may judge its gates but never starts or touches a workload; a
        Deployment by the canary's name that this rollout does not own is never scaled or deleted.
        """
        stage = self.stage
        other = self.obs.claim if self.held_by_other() else None
        if stage in TERMINAL_STAGES:
            self.release_target()
            self.condition(cond.TARGET_EXCLUSIVE, True, "Released", "the rollout has ended and holds no target")
            return True
        if other is not None:
            self.condition(cond.TARGET_EXCLUSIVE, False, "HeldByRollout",
                           f"spec.target.name: Deployment {self.spec.target.name!r} is held by GuardedRollout "
                           f"{other.name!r}, which is rolling out a change to it; this rollout waits until that "
                           "one ends (or delete it)")
            if stage in CLEANING_STAGES:
                self.remove_canary()  # our own canary may always go; the target is not ours to scale
            self.wait(5.0)
            return stage == Stage.PENDING  # judge the gates meanwhile; never act on the workload
        c = self.obs.canary
        if c is not None and not c.deleting and self.canary_foreign():
            self.condition(cond.TARGET_EXCLUSIVE, False, "CanaryNotOwned",
                           f"spec.target.name: Deployment {c.name!r} exists and is not owned by this rollout "
                           "(no controller ownerReference with its uid); it is never changed or deleted by "
                           "this rollout: remove or rename it")
            self.wait(5.0)
            return stage == Stage.PENDING
        if stage != Stage.PENDING:
            self.claim_target()  # a rollout under way holds its target (a claim lost or never written)
        self.condition(cond.TARGET_EXCLUSIVE, True, "Exclusive", "no other rollout holds the target")
        return True

    def check_revision(self) -> None:
        current = self.s.get("revision")
        if current is None or current == self.revision:
            return
        stage = self.stage
        if stage in WAVE_STAGES:
            self.record("SpecChanged", f"spec changed during wave {self.wave_label()}: retiring the canary of "
                        f"revision {current} and starting revision {self.revision} from wave 1")
            self.goto(Stage.RETIRING)
        elif stage in TERMINAL_STAGES or stage == Stage.PENDING:
            if stage in TERMINAL_STAGES:
                self.record("NewRevision", f"spec changed: rolling out revision {self.revision}")
            self.restart()
        # Promote/Cleanup finish first (the target already runs the old change); RollingBack and
        # Retiring finish removing the canary; the new revision starts after them.

    def check_target_unchanged(self) -> bool:
        t = self.obs.target
        assert t is not None
        recorded = self.s.get("stable_template_hash")
        seen = template_hash(t.template)
        if recorded is None or seen == recorded:
            self.condition(cond.TARGET_UNCHANGED, True, "Unchanged", "the target's pod template is as recorded")
            return True
        self.condition(cond.TARGET_UNCHANGED, False, "TargetTemplateChanged",
                       f"spec.target.name: the pod template of Deployment {t.name!r} was changed by someone else "
                       f"during the rollout (template {recorded} became {seen}); holding: restore it or abort")
        self.wait(5.0)
        return False

    def restart(self) -> None:
        for key in ("wave", "wave_started_at", "bake_started_at", "baked_seconds", "stable_replicas",
                    "stable_template_hash",
                    "canary_weight", "canary_replicas", "rollback_reason", "completed_at", "started_at"):
            self.s[key] = None
        self.s["plan"] = []
        self.s["conditions"] = [c for c in self.s["conditions"]
                                if c.type not in (cond.COMPLETED, cond.ROLLED_BACK)]
        self.s["analysis"] = AnalysisStatus(recent=self.s["analysis"].recent)
        self.s["revision"] = self.revision
        self.goto(Stage.PENDING)

    # -- stages ----------------------------------------------------------------------------
    def pending(self) -> None:
        t = self.obs.target
        assert t is not None
        if self.s.get("revision") is None:
            self.s["revision"] = self.revision
        if t.replicas < 1:
            self.condition(cond.VALID, False, "TargetHasNoReplicas",
                           f"spec.target.name: Deployment {t.name!r} has 0 replicas; a canary needs at least 1")
            self.wait(10.0)
            return
        sizes = [canary_replicas(w, t.replicas) for w in self.waves]
        if any(b < a for a, b in pairwise(sizes)):
            self.condition(cond.VALID, False, "WavesShrinkCanary",
                           f"spec.waves: on {t.replicas} replicas the waves run {sizes} canary pods; each wave "
                           "must run at least as many as the one before")
            self.wait(10.0)
            return
        try:
            changed_template(t.template, self.spec.change, self.revision)
        except ChangeError as err:
            self.condition(cond.VALID, False, "InvalidChange", str(err))
            return
        self.condition(cond.VALID, True, "Valid", "the change applies to the target")
        outcome = self.pass_gates()
        if outcome is None:
            if self.obs.canary is not None:
                self.remove_canary()  # a start whose status was never written left a canary: no wave, no pods
            return
        if self.s.get("paused"):
            return
        if self.held_by_other() or self.canary_foreign():
            return  # check_exclusive() says which rollout or object is in the way
        # The claim is written first and compare-and-swapped: if another rollout got it in between,
        # the shell carries out nothing after it and this start is decided again on fresh data.
        self.claim_target()
        self.s["plan"] = outcome.plan
        for note in outcome.plan_notes:
            self.record("PolicyApplied", note)
        self.s.update(
            revision=self.revision, wave=0, stable_replicas=t.replicas,
            stable_template_hash=template_hash(t.template), started_at=stamp(self.now),
            wave_started_at=stamp(self.now), bake_started_at=None, completed_at=None, rollback_reason=None,
            attempt=int(self.s.get("attempt") or 0) + 1,
        )
        self.goto(Stage.SCALE_CANARY)
        self.started = True
        self.record("RolloutStarted", f"rolling out revision {self.revision} to {t.replicas} pods of "
                    f"{t.name!r} in {len(self.waves)} waves (attempt {self.s['attempt']})")
        self.record_wave_started()

    def record_wave_started(self) -> None:
        wave = self.waves[self.wave_index]
        size = f"{wave.weight}%" if wave.weight is not None else f"{wave.replicas} pods"
        self.record("WaveStarted", f"wave {self.wave_label()} ({size}): {self.canary_target()} of "
                    f"{self.total} pods on the canary")

    def scale_canary(self) -> None:
        want = self.canary_target()
        self.ensure_canary(want)
        c = self.obs.canary
        ready = (
            self.canary_current() and c is not None and c.replicas == want
            and c.observed_generation >= c.generation and c.updated >= want and c.ready >= want
        )
        if ready:
            self.goto(Stage.SCALE_STABLE)
            # Evidence accumulates over the whole rollout (each interval's likelihood ratio is
            # conditioned on that interval's traffic split, so the test stays valid across waves);
            # each wave still needs a fresh Pass after its own bake.
            state = self.s["analysis"]
            self.s["analysis"] = state.model_copy(update={
                "since": state.since or stamp(self.now), "last_at": None, "last_verdict": None,
                "fresh_since": None, "consecutive_inconclusive": 0})
            return
        deadline = parse_duration(self.spec.progress_deadline)
        waited = seconds_between(self.s["wave_started_at"], self.now)
        if waited > deadline:
            got = c.ready if c is not None and self.canary_current() else 0
            self.rollback("ProgressDeadlineExceeded",
                          f"wave {self.wave_label()}: {got}/{want} canary pods Ready after "
                          f"{int(waited)}s (spec.progressDeadline {self.spec.progress_deadline})")
            return
        self.wait(POLL_SECONDS)

    def scale_stable(self) -> None:
        want_canary = self.canary_target()
        want_stable = self.total - want_canary
        c, t = self.obs.canary, self.obs.target
        assert t is not None
        self.ensure_canary(want_canary)
        if c is None or not self.canary_current() or c.ready < want_canary:
            # Capacity rule: the stable is lowered only while the canary's pods are Ready.
            self.goto(Stage.SCALE_CANARY)
            return
        self.ensure_target_replicas(want_stable)
        if t.replicas == want_stable and t.settled:
            self.s.update(bake_started_at=stamp(self.now), baked_seconds=0.0)
            self.goto(Stage.BAKE)
            self.record("WaveReady", f"wave {self.wave_label()}: {c.ready} canary and {t.ready} stable pods "
                        f"Ready; baking {self.waves[self.wave_index].bake}")
            return
        self.wait(POLL_SECONDS)

    def bake(self) -> None:
        want_canary = self.canary_target()
        c = self.obs.canary
        self.ensure_canary(want_canary)
        if c is not None and self.canary_current() and c.ready >= want_canary:
            self.ensure_target_replicas(self.total - want_canary)
        if self.s.get("paused"):
            return
        bake = parse_duration(self.waves[self.wave_index].bake)
        elapsed = seconds_between(self.s["bake_started_at"], self.now)
        if self.spec.analysis is not None:
            # Under analysis a bake is time under observation (core/judging.observe_bake): time with no
            # fresh data (Prometheus down, scrapes missing) does not count, however long it lasts.
            baked = float(self.s.get("baked_seconds") or 0.0)
            if baked < bake:
                self.wait(max(0.2, bake - baked))
                return
        elif elapsed < bake:
            self.wait(max(0.2, bake - elapsed))
            return
        state = self.s["analysis"]
        if self.spec.analysis is not None and (state.last_verdict != Verdict.PASS or state.fresh_since is None):
            # A wave advances on evidence, never on a lack of it; evidence that never comes (too little
            # traffic) is bounded by progressDeadline after the bake.
            deadline = parse_duration(self.spec.progress_deadline)
            if elapsed >= bake + deadline and self.spec.analysis.on_inconclusive == "Rollback":
                self.rollback("AnalysisInconclusive", f"wave {self.wave_label()}: no Pass within "
                              f"spec.progressDeadline ({self.spec.progress_deadline}) after the bake")
                return
            self.wait(parse_duration(self.spec.analysis.interval))
            return
        if self.waves[self.wave_index].manual_gate:
            self.goto(Stage.GATE)
            self.record("AwaitingPromotion", f"wave {self.wave_label()} baked {self.waves[self.wave_index].bake}; "
                        "waiting for a promote request (kubectl guarded promote)")
            return
        self.advance()

    def gate(self) -> None:
        want_canary = self.canary_target()
        self.ensure_canary(want_canary)
        c = self.obs.canary
        if c is not None and self.canary_current() and c.ready >= want_canary:
            self.ensure_target_replicas(self.total - want_canary)

    def advance(self) -> None:
        if self.wave_index + 1 >= len(self.waves):
            self.goto(Stage.PROMOTE)
            self.record("Promoting", f"all {len(self.waves)} waves passed: promoting revision "
                        f"{self.s['revision']} to {self.spec.target.name!r}")
            return
        self.s.update(wave=self.wave_index + 1, wave_started_at=stamp(self.now), bake_started_at=None,
                      baked_seconds=None)
        self.goto(Stage.SCALE_CANARY)
        self.record_wave_started()
        self.advanced = True

    def target_promoted(self) -> bool:
        """The target's template is the changed one of this revision (set by PromoteTarget)."""
        t = self.obs.target
        annotations = t.template.get("metadata", {}).get("annotations", {}) if t is not None else {}
        revision = self.s.get("revision")
        return revision is not None and annotations.get(REVISION_ANNOTATION) == revision

    def promote(self) -> None:
        t = self.obs.target
        assert t is not None
        if not self.target_promoted():
            template = changed_template(t.template, self.spec.change, self.s["revision"])
            self.actions.append(PromoteTarget(name=t.name, template=template, replicas=self.total,
                                              rollout_uid=self.obs.uid))
            self.wait(POLL_SECONDS)
            return
        self.ensure_target_replicas(self.total)
        if t.replicas == self.total and t.fully_available and t.ready >= self.total:
            self.goto(Stage.CLEANUP)
            return
        self.wait(POLL_SECONDS)

    def cleanup(self) -> None:
        if self.canary_ours():
            self.remove_canary()
            self.wait(POLL_SECONDS)
            return
        self.s["completed_at"] = stamp(self.now)
        self.goto(Stage.SUCCEEDED)
        self.record("Succeeded", f"revision {self.s['revision']} promoted: {self.total} pods of "
                    f"{self.spec.target.name!r} run the change; canary removed")

    def clean_up_to(self, final: Stage) -> Any:
        def handler() -> None:
            t = self.obs.target
            assert t is not None
            if self.total:
                self.ensure_target_replicas(self.total)
            restored = self.stable_restored()
            # A canary judged bad (or aborted) goes at once: stop the bleeding first. One that nothing
            # judged bad (the operator failed, the spec became unreadable) keeps serving until the
            # stable is back at full capacity, so Ready pods never fall below the target's count.
            if restored or self.s.get("rollback_reason") not in CAPACITY_FIRST_REASONS:
                self.remove_canary()
            if self.canary_ours() or not restored:
                self.wait(POLL_SECONDS)
                return
            if final == Stage.ROLLED_BACK:
                self.s["completed_at"] = stamp(self.now)
                self.goto(Stage.ROLLED_BACK)
                self.record("RolledBack", f"rolled back ({self.s.get('rollback_reason')}): canary removed, "
                            f"{self.total} stable pods Ready", warning=True)
            else:
                self.record("Retired", f"canary of revision {self.s.get('revision')} removed")
                self.restart()
        return handler

    def stable_restored(self) -> bool:
        t = self.obs.target
        return not self.total or (t is not None and t.replicas == self.total and t.settled
                                  and t.available >= self.total)

    def fail_safe(self, error: str) -> Decision:
        """A reconcile failed with an unexpected error: never leave the workload half-changed.

        In a wave the rollout rolls back with reason OperatorError: the stable is restored to its count
        first and the canary removed once the stable is Ready again (nothing judged the canary bad, so
        capacity comes first). Elsewhere nothing of the workload is ours to restore, so it holds. Either
        way the ReconcileFailed condition names the error until a reconcile succeeds again.
        """
        stage = self.stage
        if stage in WAVE_STAGES:
            self.rollback("OperatorError", f"wave {self.wave_label()}: the operator failed: {error}")
            done = f"rolled back to {self.total} stable pods"
        elif stage in CLEANING_STAGES:
            done = f"removing the canary and restoring {self.total} stable pods"
        else:
            done = "holding; the workload was not changed"
        message = f"{error}; {done}"
        before = cond.get(self.s["conditions"], cond.RECONCILE_FAILED)
        self.condition(cond.RECONCILE_FAILED, True, "UnexpectedError", message)
        if before is None or before.status != "True" or before.message != message:
            self.events.append(Event(type="Warning", reason="ReconcileFailed", message=message))
        restore = stage in WAVE_STAGES or stage in CLEANING_STAGES
        self.actions = list(decide_cleanup(self.status_model(), self.obs, restore=restore, release=False,
                                           remove_canary=self.stable_restored()))
        self.wait(2.0)
        return self.finish(recovered=False)

    def status_model(self) -> GuardedRolloutStatus:
        return GuardedRolloutStatus(**self.s)

    def finish(self, *, recovered: bool = True) -> Decision:
        if recovered and cond.is_true(self.s["conditions"], cond.RECONCILE_FAILED):
            self.condition(cond.RECONCILE_FAILED, False, "Recovered", "reconciles succeed again")
        stage = self.stage
        if stage in TERMINAL_STAGES:
            self.release_target()  # in the decision that ends the rollout, so later ones act on nothing
        if stage == Stage.PENDING and not self.gates_judged and self.s["gates"]:
            # Held before the gates (no target, invalid waves, paused): the gates of an earlier decision no
            # longer describe it, and a stale "waiting for a concurrency slot" would hold a place in the queue.
            self.s["gates"] = []
        self.update_conditions(stage)
        c, t = self.obs.canary, self.obs.target
        canary_ready = c.ready if c is not None and self.canary_current() else 0
        stable_ready = t.ready if t is not None else 0
        if stage in WAVE_STAGES or stage in (Stage.PROMOTE, Stage.CLEANUP):
            self.s["canary_weight"] = percent(canary_ready, stable_ready)
            self.s["canary_replicas"] = canary_ready
            self.s["wave_progress"] = self.wave_label()
        elif stage in TERMINAL_STAGES or stage in CLEANING_STAGES:
            self.s["canary_weight"] = 100 if stage == Stage.SUCCEEDED else 0
            self.s["canary_replicas"] = 0 if stage != Stage.ROLLING_BACK else canary_ready
        self.s["phase"] = cond.derive_phase(self.s["conditions"])
        self.s["message"] = self.summary(stage)
        status = GuardedRolloutStatus(**self.s)
        unique: list[Action] = []
        for action in self.actions:
            if action not in unique:
                unique.append(action)
        return Decision(actions=tuple(unique), status=status, events=tuple(self.events),
                        requeue_after=self.requeue)

def decide_fail_safe(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations,
                     error: str) -> Decision:
    """What an unexpected error in a reconcile leaves behind: see _Reconcile.fail_safe."""
    return _Reconcile(spec, status, obs).fail_safe(error)


def decide_cleanup(status: GuardedRolloutStatus, obs: Observations, *, restore: bool | None = None,
                   release: bool = True, remove_canary: bool = True) -> tuple[Action, ...]:
    """What deleting a GuardedRollout (or an operator error) must undo: its canary goes, the stable
    gets its pods back, the target's claim is released. Only what this rollout owns is touched."""
    actions: list[Action] = []
    c, t = obs.canary, obs.target
    if remove_canary and c is not None and not c.deleting and obs.uid is not None and c.owner_uid == obs.uid:
        actions.append(DeleteDeployment(name=c.name, uid=c.uid))
    ours = obs.uid is not None and obs.claim is not None and obs.claim.value == claim_value(obs.name, obs.uid)
    if restore is None:
        restore = status.stage in WAVE_STAGES or status.stage in CLEANING_STAGES
    if ours and restore and status.stable_replicas and t is not None and t.replicas != status.stable_replicas:
        actions.append(ScaleDeployment(name=t.name, replicas=status.stable_replicas, rollout_uid=obs.uid))
    if release and ours and t is not None and obs.uid is not None:
        actions.append(ReleaseTarget(name=t.name, value=claim_value(obs.name, obs.uid)))
    return tuple(actions)


__all__ = ["Decision", "canary_name", "decide", "decide_cleanup", "decide_fail_safe", "rollout_revision",
           "template_hash"]
