"""Carrying out the core's actions. Each is an absolute target, so repeating one is harmless."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
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


async def _replace_deployment(client: KubeClient, namespace: str, name: str,
                              change: Callable[[dict[str, Any]], dict[str, Any] | None],
                              missing: Callable[[], Awaitable[None]] | None = None) -> None:
    """Read, change, replace with the read resourceVersion; on a conflict read again.

    `change` returns the new body, or None when nothing is to be done; `missing` runs when the
    Deployment does not exist (default: nothing, the next observation reports it)."""
    for _ in range(RETRIES):
        current = await client.get_deployment(namespace, name)
        if current is None:
            if missing is not None:
                await missing()
            return
        body = change(copy.deepcopy(current))
        if body is None:
            return
        body.pop("status", None)
        try:
            await client.replace_deployment(namespace, body)
            return
        except Conflict:
            continue
    raise Conflict(f"could not update Deployment {name} after {RETRIES} conflicts")


async def _apply_canary(client: KubeClient, namespace: str, manifest: dict[str, Any]) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # still going away; the next reconcile creates the new one
        meta["labels"] = {**(meta.get("labels") or {}), **manifest["metadata"]["labels"]}
        meta["annotations"] = {**(meta.get("annotations") or {}), **manifest["metadata"]["annotations"]}
        if manifest["metadata"].get("ownerReferences"):
            meta["ownerReferences"] = manifest["metadata"]["ownerReferences"]
        body["spec"]["replicas"] = manifest["spec"]["replicas"]
        body["spec"]["template"] = manifest["spec"]["template"]
        return body

    async def create() -> None:
        await client.create_deployment(namespace, manifest)

    await _replace_deployment(client, namespace, manifest["metadata"]["name"], change, missing=create)


async def _promote(client: KubeClient, namespace: str, action: PromoteTarget) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        body["spec"]["template"] = action.template
        body["spec"]["replicas"] = action.replicas
        return body

    await _replace_deployment(client, namespace, action.name, change)
