"""What the engine asks for (actions: absolute targets, so doing one twice is harmless) and what it says
(Events, and the moves between positions that the operator's metrics count)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ApplyCanary:
    manifest: dict[str, Any]

    @property
    def replicas(self) -> int:
        return int(self.manifest["spec"]["replicas"])


@dataclass(frozen=True, kw_only=True)
class ScaleDeployment:
    """Scale the target; carried out only while the target's claim names `rollout_uid`."""

    name: str
    replicas: int
    rollout_uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteDeployment:
    """Delete exactly the object observed (precondition on `uid`), which this rollout owns."""

    name: str
    uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class ClaimTarget:
    """Write `value` into the target's claim annotation if it still reads `expected` (None: absent)."""

    name: str
    value: str
    expected: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReleaseTarget:
    """Remove the target's claim annotation if it still reads `value`."""

    name: str
    value: str


@dataclass(frozen=True, kw_only=True)
class PromoteTarget:
    """Give the target the changed template and its original replica count."""

    name: str
    template: dict[str, Any]
    replicas: int
    rollout_uid: str | None = None


Action = ApplyCanary | ScaleDeployment | DeleteDeployment | PromoteTarget | ClaimTarget | ReleaseTarget


@dataclass(frozen=True, kw_only=True)
class Event:
    type: str            # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Transition:
    """A move between positions: a wave by its 1-based number ("1", "2", ...), else a stage name."""

    source: str
    target: str


__all__ = ["Action", "ApplyCanary", "ClaimTarget", "DeleteDeployment", "Event", "PromoteTarget", "ReleaseTarget",
           "ScaleDeployment", "Transition"]
