"""Value objects of the engine: what it observes, what it asks for, what it says."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from guarded.core.analysis import AnalysisObservation


@dataclass(frozen=True, kw_only=True)
class DeploymentState:
    """One Deployment as the shell saw it."""

    name: str
    generation: int = 1
    observed_generation: int = 1
    replicas: int = 0                     # spec.replicas
    status_replicas: int = 0              # status.replicas: pods of every ReplicaSet
    ready: int = 0
    available: int = 0
    updated: int = 0
    selector: dict[str, Any] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    deleting: bool = False

    @property
    def settled(self) -> bool:
        """The Deployment controller has seen the latest spec and no extra pods remain."""
        return self.observed_generation >= self.generation and self.status_replicas == self.replicas

    @property
    def fully_available(self) -> bool:
        return self.settled and self.updated == self.replicas and self.available == self.replicas


@dataclass(frozen=True, kw_only=True)
class Request:
    """A manual operation asked for through the request annotation."""

    id: str
    action: str          # abort | pause | resume | promote | promote-full | retry
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Observations:
    now: datetime
    namespace: str
    name: str
    uid: str | None
    generation: int
    target: DeploymentState | None
    canary: DeploymentState | None
    request: Request | None = None
    analysis: AnalysisObservation | None = None     # present when an analysis step was due
    webhook_alerts: tuple[str, ...] = ()            # firing alerts pushed by Alertmanager that match


# -- actions: absolute targets, so doing one twice is harmless --

@dataclass(frozen=True, kw_only=True)
class ApplyCanary:
    manifest: dict[str, Any]

    @property
    def replicas(self) -> int:
        return int(self.manifest["spec"]["replicas"])


@dataclass(frozen=True, kw_only=True)
class ScaleDeployment:
    name: str
    replicas: int


@dataclass(frozen=True, kw_only=True)
class DeleteDeployment:
    name: str


@dataclass(frozen=True, kw_only=True)
class PromoteTarget:
    """Give the target the changed template and its original replica count."""

    name: str
    template: dict[str, Any]
    replicas: int


Action = ApplyCanary | ScaleDeployment | DeleteDeployment | PromoteTarget


@dataclass(frozen=True, kw_only=True)
class Event:
    type: str            # Normal | Warning
    reason: str
    message: str
