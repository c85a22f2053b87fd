"""What the engine observes: the cluster and Prometheus as the shell saw them, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from guarded.core.analysis import AnalysisObservation


@dataclass(frozen=True, kw_only=True)
class DeploymentState:
    """One Deployment as the shell saw it."""

    name: str
    uid: str | None = None
    owner_uid: str | None = None          # uid of its controller ownerReference, if any
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
    labels: dict[str, str] = field(default_factory=dict)
    deleting: bool = False

    @property
    def settled(self) -> bool:
        """The Deployment controller has seen the latest spec and no extra pods remain."""
        return self.observed_generation >= self.generation and self.status_replicas == self.replicas

    @property
    def fully_available(self) -> bool:
        return self.settled and self.updated == self.replicas and self.available == self.replicas


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The rollout that holds a target (its claim annotation), as the shell found it.

    At most one rollout acts on a target at a time: it claims the target before its first wave and
    releases it when it ends. `alive` is False when the named rollout is gone, has another uid, or
    has ended: such a claim is stale and may be taken over.
    """

    value: str           # the annotation as written: "<rollout name>/<uid>"
    name: str
    uid: str
    alive: bool


@dataclass(frozen=True, kw_only=True)
class Request:
    """A manual operation asked for through the request annotation."""

    id: str
    action: str          # abort | pause | resume | promote | promote-full | retry
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalObs:
    """A RolloutApproval naming this rollout, with the identity admission stamped on it."""

    name: str
    approver: str | None
    groups: tuple[str, ...] = ()
    revision: int | None = None
    rollout_uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class QueueEntry:
    """Another rollout, as its own status describes it, for concurrency limits."""

    namespace: str
    name: str
    created: str
    policies: tuple[str, ...]
    active: bool       # started and not finished: it holds a slot
    waiting: bool      # its only failing gate is a concurrency limit: it is in the queue


@dataclass(frozen=True, kw_only=True)
class GuardObservation:
    """What the pre-flight gates need from the cluster. Gathered only while a rollout waits to start.

    Defaults are the fail-safe ones: no dry run has been done (so nothing starts), authors unknown.
    """

    created: str = ""
    namespace_labels: dict[str, str] = field(default_factory=dict)
    policies: tuple[Any, ...] = ()                 # core.policy.NamedPolicy, every policy in the cluster
    unreadable_policies: tuple[Any, ...] = ()      # core.policy.UnreadablePolicy: they hold what they may select
    authors: tuple[str, ...] | None = None         # None: not stamped by admission
    approvals: tuple[ApprovalObs, ...] = ()
    queue: tuple[QueueEntry, ...] = ()
    service_pods: int | None = None                # pods behind the Services that route to the target
    dry_run_done: bool = False
    dry_run_error: str | None = None
    # spec.consumers as found: name -> (replicas, the (kind, name) pairs its pod template reads, its labels);
    # None: not found.
    consumers: dict[str, tuple[int, frozenset[tuple[str, str]], dict[str, str]] | None] = field(default_factory=dict)
    # JSON Schemas the policies' configValidation names, by (namespace, name, key): the text, None if unreadable.
    config_schemas: dict[tuple[str, str, str], str | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ConfigObs:
    """One ConfigMap or Secret the change names, resolved by the shell: the version its new content makes.

    `content` is the new content ({"data": ..., "binaryData": ...}) of a ConfigMap, for validation and for
    making the copy; a Secret's is never read into the core (None)."""

    kind: str                                # ConfigMap | Secret
    name: str
    version: str | None = None               # <name>-<content hash>; None when it could not be resolved
    error: str | None = None                 # why not (the source or contentFrom object is missing, ...)
    content: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class VersionObs:
    """A versioned copy as the shell found it."""

    kind: str
    version: str
    exists: bool = False
    uid: str | None = None
    ours: bool = False       # one of its ownerReferences is this rollout
    adopted: bool = False    # owned by a Deployment (promoted): it stays while that Deployment lives


@dataclass(frozen=True, kw_only=True)
class LinkedRollout:
    """Another GuardedRollout of the same shared change: this one's parent, or one of its consumers' rollouts.

    `spec` and `status` are the API models (spec None when it cannot be read)."""

    name: str
    uid: str | None
    owner_uid: str | None = None    # its controller ownerReference (a consumer's rollout: the parent's uid)
    spec: Any = None
    status: Any = None
    deleting: bool = False


@dataclass(frozen=True, kw_only=True)
class ServiceState:
    """A Service as the shell saw it."""

    name: str
    uid: str | None = None
    owner_uid: str | None = None          # its controller ownerReference's uid
    selector: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ports: tuple[dict[str, Any], ...] = ()
    deleting: bool = False


@dataclass(frozen=True, kw_only=True)
class BackendRef:
    """One backendRef of an HTTPRoute rule. `weight` None: not set (the Gateway API's default, 1)."""

    name: str
    kind: str = "Service"
    group: str = ""
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None

    @property
    def is_service(self) -> bool:
        return self.kind == "Service" and self.group in ("", "core")


@dataclass(frozen=True, kw_only=True)
class RouteState:
    """An HTTPRoute as the shell saw it: the backendRefs of each rule, in order."""

    name: str
    rules: tuple[tuple[BackendRef, ...], ...] = ()


@dataclass(frozen=True, kw_only=True)
class RoutingObservation:
    """What routing by weight reads (spec.trafficRouting): the route, the stable and canary Services, and the
    pod-template-hash of the target's current ReplicaSet (None: not found, e.g. while it rolls)."""

    route: RouteState | None = None
    route_error: str | None = None        # the route could not be read (no Gateway API CRDs, forbidden)
    services: dict[str, ServiceState] = field(default_factory=dict)   # the namespace's Services, by name
    stable_pod_hash: str | None = None


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
    guard: GuardObservation | None = None           # present while the rollout waits to start
    requester: str | None = None                    # who set the request annotation (admission)
    claim: Claim | None = None                      # who holds the target (None: nobody)
    config: tuple[ConfigObs, ...] = ()              # spec.change's ConfigMaps and Secrets, resolved
    config_versions: tuple[VersionObs, ...] = ()    # the copies resolved now or fixed in status.config
    owner_uid: str | None = None                    # this rollout's controller ownerReference, if any
    parent: LinkedRollout | None = None             # the rollout that owns this one (a consumer's rollout)
    children: tuple[LinkedRollout, ...] = ()        # the consumers' rollouts this one made (spec.consumers)
    routing: RoutingObservation | None = None       # present with spec.trafficRouting


__all__ = ["ApprovalObs", "BackendRef", "Claim", "ConfigObs", "DeploymentState", "GuardObservation", "LinkedRollout",
           "Observations", "QueueEntry", "Request", "RouteState", "RoutingObservation", "ServiceState", "VersionObs"]
