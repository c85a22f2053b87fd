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
from datetime import timedelta
from itertools import pairwise
from typing import Any

from guarded.api.common import parse_duration
from guarded.api.rollout import (
    REQUEST_ACTIONS,
    AnalysisStatus,
    GuardedRolloutSpec,
    GuardedRolloutStatus,
    HistoryEntry,
    PreRolloutCounts,
    RequestRecord,
    Stage,
    Wave,
)
from guarded.core import analysis, gates
from guarded.core import conditions as cond
from guarded.core.analysis import ANALYSIS_STAGES
from guarded.core.clock import parse, seconds_between, stamp, stamp_seconds
from guarded.core.judges import Verdict
from guarded.core.model import (
    Action,
    ApplyCanary,
    DeleteDeployment,
    Event,
    Observations,
    PromoteTarget,
    Request,
    ScaleDeployment,
)
from guarded.core.templates import (
    REVISION_ANNOTATION,
    ChangeError,
    canary_deployment,
    canary_name,
    changed_template,
    content_hash,
)
from guarded.core.waves import canary_replicas, percent

HISTORY_LIMIT = 60
POLL_SECONDS = 1.0

# Stages in which the canary may serve and the stable may be lowered.
WAVE_STAGES = frozenset({Stage.SCALE_CANARY, Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE})
# Stages in which the target's template must still be the one recorded at start.
GUARDED_STAGES = WAVE_STAGES
CLEANING_STAGES = frozenset({Stage.ROLLING_BACK, Stage.RETIRING})
TERMINAL_STAGES = frozenset({Stage.SUCCEEDED, Stage.ROLLED_BACK, Stage.FAILED})


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: GuardedRolloutStatus
    events: tuple[Event, ...]
    requeue_after: float | None  # None: nothing to wait for but a change


def rollout_revision(spec: GuardedRolloutSpec) -> str:
    """Identity of what is being rolled out: a new revision retires the running canary."""
    wire = spec.to_wire()
    return content_hash({k: wire.get(k) for k in ("target", "change", "waves")})


def template_hash(template: dict[str, Any]) -> str:
    return content_hash(template)


def decide(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations) -> Decision:
    return _Reconcile(spec, status, obs).run()


class _Reconcile:
    """The working state of one decision. Built, run once, thrown away."""

    def __init__(self, spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations) -> None:
        self.spec = spec
        self.obs = obs
        self.now = obs.now
        self.s: dict[str, Any] = dict(status)  # field name -> value; rebuilt into a model at the end
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.requeue: float | None = None
        self.revision = rollout_revision(spec)
        self.started = False  # this decision starts the rollout (records stable_replicas)
        self.advanced = False  # this decision moves to the next wave

    # -- small helpers --------------------------------------------------------------------
    @property
    def stage(self) -> Stage:
        return Stage(self.s["stage"])

    def wait(self, seconds: float) -> None:
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def record(self, reason: str, message: str, *, warning: bool = False) -> None:
        entry = HistoryEntry(time=stamp(self.now), reason=reason, message=message,
                             wave=self.s.get("wave"), revision=self.s.get("revision"))
        self.s["history"] = [*self.s["history"], entry][-HISTORY_LIMIT:]
        self.events.append(Event(type="Warning" if warning else "Normal", reason=reason, message=message))

    def condition(self, type: str, status: bool, reason: str, message: str = "") -> None:
        self.s["conditions"] = cond.set_condition(
            self.s["conditions"], type=type, status=status, reason=reason, message=message,
            now=self.now, generation=self.obs.generation,
        )

    def goto(self, stage: Stage) -> None:
        self.s["stage"] = stage

    @property
    def waves(self) -> list[Wave]:
        """The waves in effect: the plan fixed at start (policy limits applied), else spec.waves."""
        return list(self.s.get("plan") or self.spec.waves)

    @property
    def total(self) -> int:
        return int(self.s.get("stable_replicas") or 0)

    @property
    def wave_index(self) -> int:
        return int(self.s.get("wave") or 0)

    def wave_label(self) -> str:
        return f"{self.wave_index + 1}/{len(self.waves)}"

    def canary_target(self) -> int:
        return canary_replicas(self.waves[self.wave_index], self.total)

    def canary_manifest(self, replicas: int) -> dict[str, Any]:
        assert self.obs.target is not None
        template = changed_template(self.obs.target.template, self.spec.change, self.s["revision"])
        return canary_deployment(
            rollout_name=self.obs.name, rollout_uid=self.obs.uid, namespace=self.obs.namespace,
            target_name=self.spec.target.name, target_selector=self.obs.target.selector,
            template=template, replicas=replicas, revision=self.s["revision"],
        )

    def canary_current(self) -> bool:
        c = self.obs.canary
        return c is not None and not c.deleting and c.annotations.get(REVISION_ANNOTATION) == self.s["revision"]

    def ensure_canary(self, replicas: int) -> None:
        c = self.obs.canary
        if c is not None and c.deleting:
            return  # an older canary is still going away; wait for it
        if not self.canary_current() or c is None or c.replicas != replicas:
            self.actions.append(ApplyCanary(manifest=self.canary_manifest(replicas)))

    def ensure_target_replicas(self, replicas: int) -> None:
        t = self.obs.target
        if t is not None and t.replicas != replicas:
            self.actions.append(ScaleDeployment(name=t.name, replicas=replicas))

    def remove_canary(self) -> None:
        c = self.obs.canary
        if c is not None and not c.deleting:
            self.actions.append(DeleteDeployment(name=c.name))

    # -- the decision -----------------------------------------------------------------------
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
        for key in ("wave", "wave_started_at", "bake_started_at", "stable_replicas", "stable_template_hash",
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
            return
        if self.s.get("paused"):
            return
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

    def pass_gates(self) -> gates.GateOutcome | None:
        """Evaluate the pre-flight gates; None while any holds the rollout (it proceeds by itself later)."""
        if self.obs.guard is None:
            self.wait(0.0)  # the shell gathers what the gates need on the next reconcile
            return None
        outcome = gates.evaluate(self.spec, self.obs)
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
                "consecutive_inconclusive": 0})
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
            self.s["bake_started_at"] = stamp(self.now)
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
        if elapsed < bake:
            self.wait(max(0.2, bake - elapsed))
            return
        if self.spec.analysis is not None and self.s["analysis"].last_verdict != Verdict.PASS:
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
        self.s.update(wave=self.wave_index + 1, wave_started_at=stamp(self.now), bake_started_at=None)
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
            self.actions.append(PromoteTarget(name=t.name, template=template, replicas=self.total))
            self.wait(POLL_SECONDS)
            return
        self.ensure_target_replicas(self.total)
        if t.replicas == self.total and t.fully_available and t.ready >= self.total:
            self.goto(Stage.CLEANUP)
            return
        self.wait(POLL_SECONDS)

    def cleanup(self) -> None:
        if self.obs.canary is not None:
            self.remove_canary()
            self.wait(POLL_SECONDS)
            return
        self.s["completed_at"] = stamp(self.now)
        self.goto(Stage.SUCCEEDED)
        self.record("Succeeded", f"revision {self.s['revision']} promoted: {self.total} pods of "
                    f"{self.spec.target.name!r} run the change; canary removed")

    def clean_up_to(self, final: Stage) -> Any:
        def handler() -> None:
            self.remove_canary()
            t = self.obs.target
            assert t is not None
            if self.total:
                self.ensure_target_replicas(self.total)
            restored = not self.total or (t.replicas == self.total and t.settled and t.available >= self.total)
            if self.obs.canary is not None or not restored:
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

    def analyze(self) -> None:
        """Judge the wave on what the shell fetched; alerts and failures roll back at once."""
        if self.stage not in WAVE_STAGES:
            return
        if self.obs.webhook_alerts:
            self.rollback("AlertFiring", f"wave {self.wave_label()}: alert firing (Alertmanager): "
                          f"{', '.join(self.obs.webhook_alerts)}")
            return
        obs, spec = self.obs.analysis, self.spec.analysis
        if spec is None or self.stage not in ANALYSIS_STAGES:
            return
        if obs is None:
            # Not due in this decision: come back when the next judgement is, whatever else waits longer
            # (a bake), so that a bad canary is judged every interval and not only when its bake ends.
            last = self.s["analysis"].last_at
            interval = parse_duration(spec.interval)
            self.wait(interval if last is None else max(0.05, interval - seconds_between(last, self.now)))
            return
        state = self.s["analysis"]
        stable_serving = self.total - self.canary_target() > 0
        judgements = analysis.evaluate(self.spec, obs, stable_serving=stable_serving)
        verdict = analysis.overall(judgements, obs.alerts, obs.alerts_error)
        intervals = max((len(d.canary) for d in obs.metrics.values()), default=0)
        rec = analysis.record(judgements, verdict=verdict, now=self.now, wave=self.s.get("wave"),
                              alerts=obs.alerts, intervals=intervals)
        pre = list(state.pre_rollout)
        known = {p.metric for p in pre}
        for name, data in sorted(obs.metrics.items()):
            if name not in known and data.pre_rollout is not None and data.error is None:
                pre.append(PreRolloutCounts(metric=name, events=data.pre_rollout.events,
                                            requests=data.pre_rollout.requests))
        # Only a lack of *data* (Prometheus down, failed queries, no traffic, no baseline) counts
        # towards maxInconclusive; evidence that is still accumulating is bounded by the bake's deadline.
        no_data = verdict is Verdict.INCONCLUSIVE and (obs.alerts_error is not None or any(
            j.no_data for j in judgements if j.verdict is Verdict.INCONCLUSIVE))
        inconclusive = state.consecutive_inconclusive + 1 if no_data else 0
        self.s["analysis"] = state.model_copy(update={
            "last_at": stamp(self.now), "last_verdict": str(verdict), "consecutive_inconclusive": inconclusive,
            "pre_rollout": pre, "recent": [*state.recent, rec][-analysis.RECENT_LIMIT:],
        })
        text = analysis.summary(judgements, obs.alerts)
        changed = state.last_verdict != str(verdict)
        if verdict is Verdict.FAIL:
            reason = "AlertFiring" if obs.alerts else "AnalysisFailed"
            self.rollback(reason, f"wave {self.wave_label()}: {text}")
        elif verdict is Verdict.INCONCLUSIVE:
            if changed:
                self.record("AnalysisInconclusive", f"wave {self.wave_label()}: holding: "
                            f"{obs.alerts_error or '; '.join(j.metric + ': ' + j.reason for j in judgements)}",
                            warning=True)
            if inconclusive >= spec.max_inconclusive and spec.on_inconclusive == "Rollback":
                self.rollback("AnalysisInconclusive", f"wave {self.wave_label()}: no data for {inconclusive} "
                              f"judgements in a row (spec.analysis.maxInconclusive {spec.max_inconclusive})")
        elif changed:
            self.record("AnalysisPassed", f"wave {self.wave_label()}: {text}")
        self.wait(parse_duration(spec.interval))

    def rollback(self, reason: str, message: str) -> None:
        self.s["rollback_reason"] = reason
        self.s["paused"] = False
        self.goto(Stage.ROLLING_BACK)
        self.record("RollingBack", f"{reason}: {message}; removing the canary and restoring "
                    f"{self.total} stable pods", warning=True)

    # -- manual requests ---------------------------------------------------------------------
    def handle_request(self, req: Request) -> None:
        stage = self.stage
        verdict: str | None = None  # None: accepted; otherwise the reason it was refused
        if req.error:
            verdict = req.error
        elif req.action == "abort":
            if stage in WAVE_STAGES:
                self.rollback("Aborted", f"abort requested (request {req.id})")
            elif stage == Stage.PENDING and self.obs.canary is not None:
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
        baked = seconds_between(self.s["bake_started_at"], self.now) if stage == Stage.BAKE else 0.0
        if baked >= parse_duration(rule.value):
            return None
        return (f"policy {', '.join(rule.set_by)} requires every wave to bake {rule.value}; wave "
                f"{self.wave_label()} has baked {int(baked)}s")

    def unpause(self) -> None:
        if not self.s.get("paused"):
            return
        paused_at = self.s.get("paused_at")
        if self.s.get("bake_started_at") and paused_at:
            # The bake clock stops while paused.
            shifted = parse(self.s["bake_started_at"]) + (self.now - parse(paused_at))
            self.s["bake_started_at"] = stamp(shifted)
        self.s.update(paused=False, paused_at=None)

    # -- summary ---------------------------------------------------------------------------
    def finish(self) -> Decision:
        stage = self.stage
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
                   and c.type in (cond.TARGET_FOUND, cond.TARGET_UNCHANGED, cond.VALID)]
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
            until = parse(self.s["bake_started_at"]) + timedelta(seconds=parse_duration(wave_spec.bake))
            return f"{wave}: baking {wave_spec.bake} (until {stamp_seconds(until)})"
        return texts[stage]


def decide_cleanup(status: GuardedRolloutStatus, obs: Observations) -> tuple[Action, ...]:
    """What deleting a GuardedRollout must undo: the canary goes, the stable gets its pods back."""
    actions: list[Action] = []
    if obs.canary is not None and not obs.canary.deleting:
        actions.append(DeleteDeployment(name=obs.canary.name))
    stage = status.stage
    restore = stage in WAVE_STAGES or stage in CLEANING_STAGES
    if restore and status.stable_replicas and obs.target is not None and obs.target.replicas != status.stable_replicas:
        actions.append(ScaleDeployment(name=obs.target.name, replicas=status.stable_replicas))
    return tuple(actions)


__all__ = ["Decision", "canary_name", "decide", "decide_cleanup", "rollout_revision", "template_hash"]
