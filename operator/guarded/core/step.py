"""The working state of one decision (Step) and the constants the engine's parts share.

The engine is split by concern into mixins over Step: requests (core/requests.py), the pre-flight
gates (core/preflight.py), analysis (core/judging.py), conditions and the summary line
(core/summary.py), and the stages themselves (core/engine.py). Still one pure decide().
"""

from __future__ import annotations

from typing import Any

from guarded.api.rollout import (
    GuardedRolloutSpec,
    GuardedRolloutStatus,
    HistoryEntry,
    Stage,
    Wave,
)
from guarded.core import conditions as cond
from guarded.core.clock import parse, stamp
from guarded.core.model import (
    Action,
    ApplyCanary,
    ClaimTarget,
    DeleteDeployment,
    Event,
    Observations,
    ReleaseTarget,
    ScaleDeployment,
)
from guarded.core.templates import (
    REVISION_ANNOTATION,
    canary_deployment,
    changed_template,
    claim_value,
    content_hash,
)
from guarded.core.waves import canary_replicas

HISTORY_LIMIT = 60
POLL_SECONDS = 1.0

# Stages in which the canary may serve and the stable may be lowered.
WAVE_STAGES = frozenset({Stage.SCALE_CANARY, Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE})
# Stages in which the target's template must still be the one recorded at start.
GUARDED_STAGES = WAVE_STAGES
CLEANING_STAGES = frozenset({Stage.ROLLING_BACK, Stage.RETIRING})
TERMINAL_STAGES = frozenset({Stage.SUCCEEDED, Stage.ROLLED_BACK, Stage.FAILED})




def rollout_revision(spec: GuardedRolloutSpec) -> str:
    """Identity of what is being rolled out: a new revision retires the running canary."""
    wire = spec.to_wire()
    return content_hash({k: wire.get(k) for k in ("target", "change", "waves")})


def template_hash(template: dict[str, Any]) -> str:
    return content_hash(template)


class Step:
    """The working state of one decision and the small moves every part of it makes."""

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
        self.gates_judged = False  # this decision evaluated the pre-flight gates

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

    # -- ownership: act only on what this rollout owns ---------------------------------------
    def canary_ours(self) -> bool:
        """The canary Deployment exists and its controller ownerReference is this rollout (by uid)."""
        c = self.obs.canary
        return c is not None and self.obs.uid is not None and c.owner_uid == self.obs.uid

    def canary_foreign(self) -> bool:
        """A Deployment by the canary's name exists that this rollout does not own: never touch it."""
        return self.obs.canary is not None and not self.canary_ours()

    @property
    def claim(self) -> str | None:
        """The claim annotation this rollout writes on its target."""
        return claim_value(self.obs.name, self.obs.uid) if self.obs.uid else None

    def holds_target(self) -> bool:
        return self.obs.claim is not None and self.obs.claim.value == self.claim

    def held_by_other(self) -> bool:
        """Another rollout that still exists and has not ended holds the target."""
        return self.obs.claim is not None and self.obs.claim.alive and not self.holds_target()

    def claim_target(self) -> None:
        """Ask for the target's claim (compare-and-swap on the value seen); a stale claim is taken over."""
        t = self.obs.target
        if t is None or self.claim is None or self.holds_target() or self.held_by_other():
            return
        self.actions.append(ClaimTarget(name=t.name, value=self.claim,
                                        expected=self.obs.claim.value if self.obs.claim else None))

    def release_target(self) -> None:
        # A claim asked for earlier in this same decision is simply not made.
        self.actions = [a for a in self.actions if not isinstance(a, ClaimTarget)]
        t = self.obs.target
        if t is not None and self.claim is not None and self.holds_target():
            self.actions.append(ReleaseTarget(name=t.name, value=self.claim))

    def canary_current(self) -> bool:
        c = self.obs.canary
        return (c is not None and not c.deleting and self.canary_ours()
                and c.annotations.get(REVISION_ANNOTATION) == self.s["revision"])

    def ensure_canary(self, replicas: int) -> None:
        c = self.obs.canary
        if c is not None and (c.deleting or not self.canary_ours()):
            return  # an older canary is still going away, or it is not ours: wait, never touch it
        if not self.canary_current() or c is None or c.replicas != replicas:
            self.actions.append(ApplyCanary(manifest=self.canary_manifest(replicas)))

    def ensure_target_replicas(self, replicas: int) -> None:
        t = self.obs.target
        if t is not None and t.replicas != replicas:
            self.actions.append(ScaleDeployment(name=t.name, replicas=replicas, rollout_uid=self.obs.uid))

    def remove_canary(self) -> None:
        c = self.obs.canary
        if c is not None and not c.deleting and self.canary_ours():
            self.actions.append(DeleteDeployment(name=c.name, uid=c.uid))

    # -- the decision -----------------------------------------------------------------------
    def rollback(self, reason: str, message: str) -> None:
        self.s["rollback_reason"] = reason
        self.s["paused"] = False
        self.goto(Stage.ROLLING_BACK)
        self.record("RollingBack", f"{reason}: {message}; removing the canary and restoring "
                    f"{self.total} stable pods", warning=True)

    # -- manual requests ---------------------------------------------------------------------
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
    # Stage moves that other parts ask for; the engine (core/engine.py) defines them.
    def advance(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

