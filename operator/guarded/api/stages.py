"""Where a rollout is: the engine's stage and the phase shown to users, and the groups of each.

Every group of stages or phases is named here once; every other module asks the stage or the phase."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """Where the engine is. The phase shown to users is derived from conditions and this."""

    PENDING = "Pending"
    SCALE_CANARY = "ScaleCanary"
    SCALE_STABLE = "ScaleStable"
    BAKE = "Bake"
    GATE = "Gate"
    PROMOTE = "Promote"
    CLEANUP = "Cleanup"
    SUCCEEDED = "Succeeded"
    RETIRING = "Retiring"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    # The groups of stages, named once here (every other module asks the stage).
    @property
    def in_wave(self) -> bool:
        """The canary may serve and the stable may be lowered; the target's template must stay as recorded."""
        return self in _IN_WAVE

    @property
    def judged(self) -> bool:
        """Analysis judges the canary (its pods are Ready for the wave)."""
        return self in _JUDGED

    @property
    def promoting(self) -> bool:
        """The waves are over: the target gets the change, then the canary goes."""
        return self in _PROMOTING

    @property
    def cleaning(self) -> bool:
        """The canary is being removed and the stable restored (rollback, or a spec change mid-wave)."""
        return self in _CLEANING

    @property
    def terminal(self) -> bool:
        """The rollout has ended; only a new revision or a retry starts it again."""
        return self in _TERMINAL

    @property
    def active(self) -> bool:
        """The rollout holds its target and may change workloads (between its start and its end)."""
        return self.in_wave or self.promoting or self.cleaning


_IN_WAVE = frozenset({Stage.SCALE_CANARY, Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE})
_JUDGED = frozenset({Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE})
_PROMOTING = frozenset({Stage.PROMOTE, Stage.CLEANUP})
_CLEANING = frozenset({Stage.ROLLING_BACK, Stage.RETIRING})
_TERMINAL = frozenset({Stage.SUCCEEDED, Stage.ROLLED_BACK, Stage.FAILED})


class Phase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    BLOCKED = "Blocked"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    # The groups of phases, named once here, as the stages' are.
    @property
    def waiting(self) -> bool:
        """Before wave 1: the pre-flight gates are still judged."""
        return self in _WAITING_PHASES

    @property
    def rollback(self) -> bool:
        """The rollout is rolling back or has rolled back."""
        return self in _ROLLBACK_PHASES

    @property
    def terminal(self) -> bool:
        """The rollout has ended: succeeded, rolled back or failed."""
        return self in _TERMINAL_PHASES


_WAITING_PHASES = frozenset({Phase.PENDING, Phase.AWAITING_APPROVAL, Phase.BLOCKED})
_ROLLBACK_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK})
_TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED})


def stage_in(status: Mapping[str, Any] | None) -> Stage | None:
    """The stage of a status as the API returns it (Pending before the operator wrote one); None for a
    stage this version does not know."""
    try:
        return Stage((status or {}).get("stage") or Stage.PENDING)
    except ValueError:
        return None


def phase_in(status: Mapping[str, Any] | None) -> Phase | None:
    """The phase of a status as the API returns it (Pending before the operator wrote one); None for a
    phase this version does not know."""
    try:
        return Phase((status or {}).get("phase") or Phase.PENDING)
    except ValueError:
        return None
