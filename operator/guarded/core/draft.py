"""The inputs of one decision and its draft: what every stage function reads and returns.

`Inputs` is what decide() was given (spec, observations, the revision they ask for); `Draft` is the
decision as it is being made: the next status (the API model itself, never an untyped dict), the
actions, the events, the moves between positions and how soon to decide again. A Draft is frozen:
each step returns a new one, so a function's effect is its return value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from guarded.api.reasons import Reason
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus, HistoryEntry, Wave
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core.actions import Action, Event, Transition
from guarded.core.clock import stamp
from guarded.core.observations import Observations
from guarded.core.templates import content_hash
from guarded.core.waves import canary_replicas, routed_canary_replicas

HISTORY_LIMIT = 60
POLL_SECONDS = 1.0


def rollout_revision(spec: GuardedRolloutSpec) -> str:
    """Identity of what is being rolled out: a new revision retires the running canary."""
    wire = spec.to_wire()
    keys = ("target", "change", "waves", "trafficRouting") if spec.traffic_routing else ("target", "change", "waves")
    return content_hash({k: wire.get(k) for k in keys})


def template_hash(template: dict[str, Any]) -> str:
    return content_hash(template)


def position(status: GuardedRolloutStatus) -> str:
    """Where a rollout is, as the operator's wave-transition metric names it."""
    if status.stage.in_wave and status.wave is not None:
        return str(status.wave + 1)
    if status.stage == Stage.CLEANUP:
        return "Promote"  # the canary's removal after promotion is part of it
    return str(status.stage)


@dataclass(frozen=True)
class Inputs:
    """What one decision is made from. Nothing else: no clock, no I/O."""

    spec: GuardedRolloutSpec
    status: GuardedRolloutStatus  # as it was read: what the decision starts from
    obs: Observations
    revision: str                 # of the spec: what is to be rolled out

    @classmethod
    def of(cls, spec: GuardedRolloutSpec, status: GuardedRolloutStatus, obs: Observations) -> Inputs:
        return cls(spec=spec, status=status, obs=obs, revision=rollout_revision(spec))

    @property
    def now(self) -> datetime:
        return self.obs.now


@dataclass(frozen=True)
class Draft:
    """A decision being made. Every method returns a new Draft."""

    status: GuardedRolloutStatus
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    transitions: tuple[Transition, ...] = ()
    requeue: float | None = None  # None: nothing to wait for but a change

    @property
    def stage(self) -> Stage:
        return self.status.stage

    def update(self, **fields: Any) -> Draft:
        """The next status with these fields changed; a move to another position is recorded."""
        status = self.status.model_copy(update=fields)
        before, after = position(self.status), position(status)
        moves = self.transitions + ((Transition(source=before, target=after),) if before != after else ())
        return replace(self, status=status, transitions=moves)

    def goto(self, stage: Stage) -> Draft:
        return self.update(stage=stage)

    def emit(self, event: Event) -> Draft:
        return replace(self, events=(*self.events, event))

    def drop(self, kind: type) -> Draft:
        """Without the actions of this kind asked for so far in this decision."""
        return replace(self, actions=tuple(a for a in self.actions if not isinstance(a, kind)))

    def act(self, action: Action) -> Draft:
        return self if action in self.actions else replace(self, actions=(*self.actions, action))

    def wait(self, seconds: float) -> Draft:
        """Decide again within `seconds` (the soonest of every wait asked for in one decision)."""
        return replace(self, requeue=seconds if self.requeue is None else min(self.requeue, seconds))

    def record(self, inp: Inputs, reason: Reason, message: str, *, warning: bool = False) -> Draft:
        """A history entry and the Event that says the same."""
        entry = HistoryEntry(time=stamp(inp.now), reason=str(reason), message=message,
                             wave=self.status.wave, revision=self.status.revision)
        event = Event(type="Warning" if warning else "Normal", reason=str(reason), message=message)
        return self.update(history=[*self.status.history, entry][-HISTORY_LIMIT:]).emit(event)

    def condition(self, inp: Inputs, type_: str, status: bool, reason: Reason | str, message: str = "") -> Draft:
        conditions = cond.set_condition(self.status.conditions, type=type_, status=status, reason=str(reason),
                                        message=message, now=inp.now, generation=inp.obs.generation)
        return self if conditions == self.status.conditions else self.update(conditions=conditions)


# -- what the waves in effect say (pure functions of the spec and the status) ----------------------

def waves(inp: Inputs, status: GuardedRolloutStatus) -> list[Wave]:
    """The waves in effect: the plan fixed at start (policy limits applied), else spec.waves."""
    return list(status.plan or inp.spec.waves)


def total(status: GuardedRolloutStatus) -> int:
    """The target's replica count when the rollout started (0 before the start)."""
    return int(status.stable_replicas or 0)


def wave_index(status: GuardedRolloutStatus) -> int:
    return int(status.wave or 0)


def wave_label(inp: Inputs, status: GuardedRolloutStatus) -> str:
    return f"{wave_index(status) + 1}/{len(waves(inp, status))}"


def current_wave(inp: Inputs, status: GuardedRolloutStatus) -> Wave:
    return waves(inp, status)[wave_index(status)]


def canary_target(inp: Inputs, status: GuardedRolloutStatus) -> int:
    """Canary pods the current wave runs."""
    if inp.spec.traffic_routing is not None:
        return routed_canary_replicas(current_wave(inp, status), total(status))
    return canary_replicas(current_wave(inp, status), total(status))


def stable_target(inp: Inputs, status: GuardedRolloutStatus) -> int:
    """Stable pods while the current wave runs: the rest of the target's count; all of it when the route's
    weights, not the pods' share, carry the wave (no capacity is taken from the stable)."""
    if inp.spec.traffic_routing is not None:
        return total(status)
    return total(status) - canary_target(inp, status)
