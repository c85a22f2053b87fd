"""Carrying out the core's actions. Each is an absolute target, so repeating one is harmless."""

from __future__ import annotations

import copy
from typing import Any

from guarded.core.model import Action, ApplyCanary, DeleteDeployment, PromoteTarget, ScaleDeployment
from guarded.kube.client import Conflict, KubeClient

RETRIES = 5


async def apply_actions(client: KubeClient, namespace: str, actions: tuple[Action, ...]) -> None:
    for action in actions:
        if isinstance(action, ApplyCanary):
            await _apply_canary(client, namespace, action.manifest)
        elif isinstance(action, ScaleDeployment):
            await client.scale_deployment(namespace, action.name, action.replicas)
        elif isinstance(action, DeleteDeployment):
            await client.delete_deployment(namespace, action.name)
        elif isinstance(action, PromoteTarget):
            await _promote(client, namespace, action)
        else:  # pragma: no cover - exhaustive over the Action union
            raise TypeError(f"unknown action {action!r}")


async def _apply_canary(client: KubeClient, namespace: str, manifest: dict[str, Any]) -> None:
    name = manifest["metadata"]["name"]
    for _ in range(RETRIES):
        current = await client.get_deployment(namespace, name)
        if current is None:
            await client.create_deployment(namespace, manifest)
            return
        if current["metadata"].get("deletionTimestamp"):
            return  # still going away; the next reconcile creates the new one
        body = copy.deepcopy(current)
        body["metadata"]["labels"] = {**(current["metadata"].get("labels") or {}), **manifest["metadata"]["labels"]}
        body["metadata"]["annotations"] = {**(current["metadata"].get("annotations") or {}),
                                           **manifest["metadata"]["annotations"]}
        if manifest["metadata"].get("ownerReferences"):
            body["metadata"]["ownerReferences"] = manifest["metadata"]["ownerReferences"]
        body["spec"]["replicas"] = manifest["spec"]["replicas"]
        body["spec"]["template"] = manifest["spec"]["template"]
        body.pop("status", None)
        try:
            await client.replace_deployment(namespace, body)
            return
        except Conflict:
            continue
    raise Conflict(f"could not update Deployment {name} after {RETRIES} conflicts")


async def _promote(client: KubeClient, namespace: str, action: PromoteTarget) -> None:
    for _ in range(RETRIES):
        current = await client.get_deployment(namespace, action.name)
        if current is None:
            return  # reported by the next observation
        body = copy.deepcopy(current)
        body["spec"]["template"] = action.template
        body["spec"]["replicas"] = action.replicas
        body.pop("status", None)
        try:
            await client.replace_deployment(namespace, body)
            return
        except Conflict:
            continue
    raise Conflict(f"could not promote Deployment {action.name} after {RETRIES} conflicts")
