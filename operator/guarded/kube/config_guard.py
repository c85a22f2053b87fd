"""Guarded configuration on the cluster: an edit recorded by the webhook becomes (or has) its GuardedRollout.

Level-based and idempotent, like kube/workloads.py: `release_config` can run any number of times, from
the webhook right after an edit, from every guarded Deployment's event (for the configuration it reads)
and from every event of a release made of an edit. Decisions are pure (core/config_guard.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from guarded import logs
from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import PLURAL
from guarded.core.config_guard import DESIRED_VERSION, config_next_step
from guarded.core.config_refs import reads
from guarded.core.workload_guard import GUARDED_LABEL, template_of
from guarded.kube import config
from guarded.kube.client import KubeClient
from guarded.kube.config import ContentChanged

_log = logs.logger()


async def consumers(client: KubeClient, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    """The guarded Deployments whose pods read the object (or a version of it)."""
    items = await client._items(client.apps.list_namespaced_deployment, namespace,
                                label_selector=f"{GUARDED_LABEL}=true")
    return [d for d in items if reads(template_of(d), kind, name) and not d["metadata"].get("deletionTimestamp")]


async def release_config(client: KubeClient, kind: str, namespace: str, name: str,
                         defaults_for: Any) -> None:
    """The desire recorded on a guarded ConfigMap or Secret becomes its release; markers follow the release.
    `defaults_for(labels)` gives the releaseDefaults of the policies guarding a Deployment with those labels."""
    obj = await config.get(client, kind, namespace, name)
    if obj is None or DESIRED_VERSION not in ((obj.get("metadata") or {}).get("annotations") or {}):
        return
    readers = await consumers(client, namespace, kind, name)
    rollouts = {r["metadata"]["name"]: r for r in await client.list_namespaced_custom(namespace, PLURAL)}
    labels = (readers[0]["metadata"].get("labels") or {}) if readers else {}
    step = config_next_step(kind, obj, sorted(d["metadata"]["name"] for d in readers), rollouts,
                            defaults_for(labels))
    if step.supersede is not None:
        try:
            await client._call(client.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                               step.supersede)
        except ApiException as exc:
            if exc.status != 404:
                raise
    if step.create is not None:
        try:
            await client._call(client.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                               step.create)
            _log.info("configuration edit recorded as a release", namespace=namespace, kind=kind, name=name,
                      rollout=step.create["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 409:
                raise
    changes = {k: v for k, v in step.annotate.items()
               if ((obj["metadata"].get("annotations") or {}).get(k)) != v}
    if changes:
        await client._call(config.api(client, kind, "patch"), name, namespace,
                           {"metadata": {"annotations": changes}})


async def make_version(client: KubeClient, body: Mapping[str, Any], of: str) -> None:
    """The webhook's one side effect: the immutable copy of an edit (the same content: the same copy). An
    object by that name that is not that copy raises config.ContentChanged (the edit is refused)."""
    kind, namespace = body["kind"], body["metadata"]["namespace"]
    try:
        await client._call(config.api(client, kind, "create"), namespace, dict(body))
    except ApiException as exc:
        if exc.status != 409:
            raise ContentChanged(f"could not keep the edit as {body['metadata']['name']!r} "
                                 f"(HTTP {exc.status} {exc.reason})") from None
        existing = await config.get(client, kind, namespace, body["metadata"]["name"])
        if existing is None:
            raise ContentChanged(f"{body['metadata']['name']!r} was deleted meanwhile: try again") from None
        config.verify_version(kind, existing, of)


def soon(client: KubeClient, kind: str, namespace: str, name: str, defaults_for: Any) -> None:
    """After the webhook answered: release the edit once the API server has stored it."""
    async def later() -> None:
        for delay in (0.3, 1.0, 3.0):
            await asyncio.sleep(delay)
            try:
                await release_config(client, kind, namespace, name, defaults_for)
                obj = await config.get(client, kind, namespace, name)
                if obj is not None and DESIRED_VERSION in ((obj.get("metadata") or {}).get("annotations") or {}):
                    return
            except Exception as exc:  # the next event (or the next pass) tries again
                _log.warning("releasing a configuration edit failed", kind=kind, name=name, error=str(exc))
    task = asyncio.get_running_loop().create_task(later())
    _PENDING.add(task)   # the loop keeps only a weak reference to a task
    task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Task[None]] = set()
