"""Carrying out the core's actions. Each is an absolute target, so repeating one is harmless.

Every change checks ownership on the object as read just before it is written (with that read's
resourceVersion, so nothing slips in between): the canary is changed or deleted only while its
controller ownerReference is the acting rollout (by uid, and a delete carries a uid precondition),
and the target is scaled or promoted only while its claim annotation names the acting rollout.
A claim is compare-and-swapped; when it fails, nothing after it in the same decision is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes.client.rest import ApiException

from guarded import logs
from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import PLURAL
from guarded.core.actions import (
    Action,
    ApplyCanary,
    ApplyService,
    ClaimTarget,
    CreateRollout,
    DeleteDeployment,
    DeleteRollout,
    DeleteService,
    EnsureConfigVersion,
    MirrorConfig,
    PinSelector,
    PromoteTarget,
    ReleaseTarget,
    RemoveConfigVersion,
    ScaleDeployment,
    SetRouteWeights,
    UnpinSelector,
)
from guarded.core.templates import CLAIM_ANNOTATION, parse_claim
from guarded.kube import config, routing
from guarded.kube.client import Conflict, KubeClient
from guarded.kube.patches import json_copy

RETRIES = 5


class NotOwned(Exception):
    """The object is not (or no longer) ours to change: nothing after it is done; decide again later."""


async def apply_actions(client: KubeClient, namespace: str, actions: tuple[Action, ...], *,
                        fence: Callable[[], Awaitable[None]] | None = None) -> None:
    """Carry out the actions in order. `fence` runs before each one and raises (Conflict) when the decision
    they come from is stale: a replica that was paused between deciding and acting, while another replica
    took over and moved the rollout on, must not act on what it saw before the pause."""
    for action in actions:
        if fence is not None:
            await fence()
        try:
            await _apply(client, namespace, action)
        except routing.NotOurs as exc:
            raise NotOwned(str(exc)) from exc


async def _apply(client: KubeClient, namespace: str, action: Action) -> None:
    if isinstance(action, ApplyService | DeleteService | PinSelector | UnpinSelector | SetRouteWeights):
        await _apply_routing(client, namespace, action)
        return
    if isinstance(action, ApplyCanary):
        await _apply_canary(client, namespace, action.manifest)
    elif isinstance(action, ScaleDeployment):
        await _scale(client, namespace, action)
    elif isinstance(action, DeleteDeployment):
        if action.uid is None:
            raise NotOwned(f"refusing to delete Deployment {action.name} without a uid precondition")
        await client.delete_deployment(namespace, action.name, uid=action.uid)
    elif isinstance(action, PromoteTarget):
        await _promote(client, namespace, action)
    elif isinstance(action, ClaimTarget):
        await _claim(client, namespace, action)
    elif isinstance(action, ReleaseTarget):
        await _release(client, namespace, action)
    elif isinstance(action, EnsureConfigVersion):
        await config.ensure_version(client, namespace, action)
    elif isinstance(action, RemoveConfigVersion):
        await config.remove_version(client, namespace, action)
    elif isinstance(action, CreateRollout):
        await _create_rollout(client, namespace, action.manifest)
    elif isinstance(action, DeleteRollout):
        await _delete_rollout(client, namespace, action)
    elif isinstance(action, MirrorConfig):
        target = await client.get_deployment(namespace, action.target)
        if target is not None:
            await config.mirror(client, namespace, target, action.config)
    else:  # pragma: no cover - exhaustive over the Action union
        raise TypeError(f"unknown action {action!r}")


async def _apply_routing(client: KubeClient, namespace: str,
                         action: ApplyService | DeleteService | PinSelector | UnpinSelector | SetRouteWeights) -> None:
    if isinstance(action, ApplyService):
        await routing.apply_service(client, namespace, action)
    elif isinstance(action, DeleteService):
        await routing.delete_service(client, namespace, action)
    elif isinstance(action, PinSelector):
        await routing.pin(client, namespace, action)
    elif isinstance(action, UnpinSelector):
        await routing.unpin(client, namespace, action)
    else:
        await routing.apply_weights(client, namespace, action)


async def _replace_deployment(client: KubeClient, namespace: str, name: str,
                              change: Callable[[dict[str, Any]], dict[str, Any] | None],
                              missing: Callable[[], Awaitable[None]] | None = None) -> None:
    """Read, change, replace with the read resourceVersion; on a conflict read again.

    The first read is the watch's copy (issue 11: no GET in steady state): the replace carries its
    resourceVersion, so a copy that is behind only costs a conflict, after which the API server is asked.
    `change` returns the new body, or None when nothing is to be done (it raises NotOwned when the
    object is not ours); `missing` runs when the Deployment does not exist (default: nothing, the
    next observation reports it)."""
    for attempt in range(RETRIES):
        read = client.observed_deployment if attempt == 0 else client.get_deployment
        current = await read(namespace, name)
        if current is None:
            if missing is not None:
                await missing()
            return
        body = change(json_copy(current))
        if body is None:
            return
        body.pop("status", None)
        try:
            await client.replace_deployment(namespace, body)
            return
        except Conflict:
            client.distrust("deployments", namespace, name)
            continue
    raise Conflict(f"could not update Deployment {name} after {RETRIES} conflicts")


def _claimed_by(body: dict[str, Any]) -> str | None:
    claim = parse_claim((body["metadata"].get("annotations") or {}).get(CLAIM_ANNOTATION))
    return claim[1] if claim else None


def _require_claim(body: dict[str, Any], rollout_uid: str | None) -> None:
    holder = _claimed_by(body)
    if rollout_uid is None or holder != rollout_uid:
        raise NotOwned(f"Deployment {body['metadata']['name']} is held by rollout uid {holder}, "
                       f"not {rollout_uid}: not changing it")


def _owner_uid(body: dict[str, Any]) -> str | None:
    owner = next((r for r in body["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
    return owner.get("uid") if owner else None


async def _apply_canary(client: KubeClient, namespace: str, manifest: dict[str, Any]) -> None:
    owners = manifest["metadata"].get("ownerReferences") or []
    ours = owners[0]["uid"] if owners else None

    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # still going away; the next reconcile creates the new one
        if ours is None or _owner_uid(body) != ours:
            raise NotOwned(f"Deployment {meta['name']} is not owned by rollout uid {ours}: not changing it")
        meta["labels"] = {**(meta.get("labels") or {}), **manifest["metadata"]["labels"]}
        meta["annotations"] = {**(meta.get("annotations") or {}), **manifest["metadata"]["annotations"]}
        body["spec"]["replicas"] = manifest["spec"]["replicas"]
        body["spec"]["template"] = manifest["spec"]["template"]
        return body

    async def create() -> None:
        await client.create_deployment(namespace, manifest)

    await _replace_deployment(client, namespace, manifest["metadata"]["name"], change, missing=create)


async def _scale(client: KubeClient, namespace: str, action: ScaleDeployment) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        _require_claim(body, action.rollout_uid)
        if body["spec"].get("replicas") == action.replicas:
            return None
        body["spec"]["replicas"] = action.replicas
        return body

    await _replace_deployment(client, namespace, action.name, change)


async def _promote(client: KubeClient, namespace: str, action: PromoteTarget) -> None:
    """The target gets the changed template. The configuration versions it reads are adopted by it first,
    so that they outlive the rollout."""
    def change(body: dict[str, Any]) -> dict[str, Any]:
        _require_claim(body, action.rollout_uid)
        body["spec"]["template"] = action.template
        body["spec"]["replicas"] = action.replicas
        return body

    if action.config:
        target = await client.get_deployment(namespace, action.name)
        if target is None:
            return
        _require_claim(target, action.rollout_uid)
        await config.adopt(client, namespace, target, action.config)
    await _replace_deployment(client, namespace, action.name, change)


async def _delete_rollout(client: KubeClient, namespace: str, action: DeleteRollout) -> None:
    try:
        await client._call(client.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                           action.name, body={"preconditions": {"uid": action.uid}})
    except ApiException as exc:
        if exc.status not in (404, 409):  # gone, or another object by that name now
            raise


async def _create_rollout(client: KubeClient, namespace: str, manifest: dict[str, Any]) -> None:
    try:
        await client._call(client.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        if exc.status != 409:  # made by an earlier decision already
            raise


async def _claim(client: KubeClient, namespace: str, action: ClaimTarget) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        annotations = body["metadata"].setdefault("annotations", {}) or {}
        body["metadata"]["annotations"] = annotations
        seen = annotations.get(CLAIM_ANNOTATION)
        if seen == action.value:
            return None
        if seen != action.expected:
            raise NotOwned(f"Deployment {action.name} was claimed by {seen} meanwhile; not starting")
        annotations[CLAIM_ANNOTATION] = action.value
        logs.logger().info("claimed target", deployment=action.name, claim=action.value, previous=seen)
        return body

    await _replace_deployment(client, namespace, action.name, change)


async def _release(client: KubeClient, namespace: str, action: ReleaseTarget) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        annotations = body["metadata"].get("annotations") or {}
        if annotations.get(CLAIM_ANNOTATION) != action.value:
            return None  # not ours (any more): nothing to release
        del annotations[CLAIM_ANNOTATION]
        return body

    await _replace_deployment(client, namespace, action.name, change)
