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
    config: tuple[ConfigRef, ...] = ()   # versions the template reads: adopted by the target, mirrored to sources


@dataclass(frozen=True, kw_only=True)
class ConfigRef:
    kind: str        # ConfigMap | Secret
    name: str        # what the stable pods read
    version: str     # the copy with the new content


@dataclass(frozen=True, kw_only=True)
class EnsureConfigVersion:
    """Make the immutable copy `version` of new content for `name`, owned by the rollout (or add the rollout
    as an owner of an existing one). A ConfigMap's content is carried; a Secret's is copied by the shell
    from `copy_from`, so that it never passes through the core."""

    kind: str
    name: str
    version: str
    content: dict[str, Any] | None = None
    copy_from: str | None = None
    rollout_name: str
    rollout_uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class RemoveConfigVersion:
    """Delete exactly this copy (uid precondition) if it is still owned by the rollout and no Deployment."""

    kind: str
    version: str
    uid: str
    rollout_uid: str | None = None


@dataclass(frozen=True, kw_only=True)
class CreateRollout:
    """Create a consumer's GuardedRollout (owned by the acting one); one that exists already is left as it is."""

    manifest: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class DeleteRollout:
    """Delete a consumer's GuardedRollout this one owns (uid precondition)."""

    name: str
    uid: str


@dataclass(frozen=True, kw_only=True)
class MirrorConfig:
    """After promotion: each changed object shows the promoted version's content (kube/config.mirror)."""

    target: str
    config: tuple[ConfigRef, ...]


@dataclass(frozen=True, kw_only=True)
class ApplyService:
    """Create the canary Service (owned by the rollout), or bring one the rollout owns to this manifest."""

    manifest: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class DeleteService:
    """Delete exactly the Service observed (uid precondition), which this rollout owns."""

    name: str
    uid: str


@dataclass(frozen=True, kw_only=True)
class PinSelector:
    """Add `key: value` to a Service's selector and mark it pinned by `rollout_uid` (annotation); refused when
    another rollout's pin is on it."""

    service: str
    key: str
    value: str
    rollout_uid: str


@dataclass(frozen=True, kw_only=True)
class UnpinSelector:
    """Remove the selector key this rollout pinned (only while its value is `value` and the pin is ours)."""

    service: str
    key: str
    value: str
    rollout_uid: str


@dataclass(frozen=True, kw_only=True)
class SetRouteWeights:
    """In each of `rules` of the HTTPRoute: the canary backendRef at `canary_weight` and the stable one at
    100 - that; with `canary_weight` None the canary backendRef is removed and the stable's weight set back to
    `stable_weight` (None: unset). Absolute, so doing it twice is harmless."""

    route: str
    rules: tuple[int, ...]
    service: str
    canary_service: str
    canary_weight: int | None
    stable_weight: int | None = None


Action = (ApplyCanary | ScaleDeployment | DeleteDeployment | PromoteTarget | ClaimTarget | ReleaseTarget
          | EnsureConfigVersion | RemoveConfigVersion | CreateRollout | DeleteRollout | MirrorConfig
          | ApplyService | DeleteService | PinSelector | UnpinSelector | SetRouteWeights)


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


__all__ = [
    "Action",
    "ApplyCanary",
    "ApplyService",
    "ClaimTarget",
    "ConfigRef",
    "CreateRollout",
    "DeleteDeployment",
    "DeleteRollout",
    "DeleteService",
    "EnsureConfigVersion",
    "Event",
    "MirrorConfig",
    "PinSelector",
    "PromoteTarget",
    "ReleaseTarget",
    "RemoveConfigVersion",
    "ScaleDeployment",
    "SetRouteWeights",
    "Transition",
    "UnpinSelector",
]
