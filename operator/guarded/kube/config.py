"""The configuration a change names, on the cluster: resolving its new content into a version, and making,
adopting, mirroring and removing the versioned copies (core/config.py decides; this module reads and writes).

A Secret's data is read here only to hash it and to copy it into its version; it is never logged, put in
an observation, an action, a status or an Event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from guarded import logs
from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.api.stages import Stage
from guarded.core.actions import ConfigRef, EnsureConfigVersion, RemoveConfigVersion
from guarded.core.config_refs import (
    CONFIG_OF_LABEL,
    content_of,
    digest_of,
    is_version_of_labelled,
    merged_data,
    references,
    source_of,
    version_labels,
    version_name,
)
from guarded.core.observations import ConfigObs, VersionObs
from guarded.kube.client import Conflict, KubeClient

_log = logs.logger()


MADE_BY = f"{GROUP}/made-by"   # on a version: the uid of the rollout that made it (only that one deletes it)


class ContentChanged(Exception):
    """The content a version was fixed from has changed since: the copy cannot be made as decided."""


def api(client: KubeClient, kind: str, verb: str) -> Any:
    noun = "config_map" if kind == "ConfigMap" else "secret"
    return getattr(client.core, f"{verb}_namespaced_{noun}")


async def get(client: KubeClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return await client._get_json(api(client, kind, "read"), name, namespace)


# -- observing --------------------------------------------------------------------------------------

async def _resolve_map(client: KubeClient, namespace: str, change: Any, running: str | None = None) -> ConfigObs:
    """`running`: the version of it the target's pods read now, if any: keys set are set on that content (the
    object itself may not show it, when it was not mirrored)."""
    source = await get(client, "ConfigMap", namespace, change.name)
    if source is None:
        return ConfigObs(kind="ConfigMap", name=change.name,
                         error=f"ConfigMap {change.name!r} not found in namespace {namespace!r}")
    if change.content_from is not None:
        origin = await get(client, "ConfigMap", namespace, change.content_from)
        if origin is None:
            return ConfigObs(kind="ConfigMap", name=change.name, error=f"contentFrom: ConfigMap "
                             f"{change.content_from!r} not found in namespace {namespace!r}")
        content = content_of("ConfigMap", origin)
    else:
        base = await get(client, "ConfigMap", namespace, running) if running else None
        current = content_of("ConfigMap", base if base is not None else source)
        content = {"data": merged_data(current["data"], change.data or {}, change.remove_keys),
                   "binaryData": current["binaryData"]}
    return ConfigObs(kind="ConfigMap", name=change.name, version=version_name(change.name, digest_of(content)),
                     content=content)


async def _resolve_secret(client: KubeClient, namespace: str, change: Any) -> ConfigObs:
    if await get(client, "Secret", namespace, change.name) is None:
        return ConfigObs(kind="Secret", name=change.name,
                         error=f"Secret {change.name!r} not found in namespace {namespace!r}")
    origin = await get(client, "Secret", namespace, change.content_from)
    if origin is None:
        return ConfigObs(kind="Secret", name=change.name, error=f"contentFrom: Secret {change.content_from!r} "
                         f"not found in namespace {namespace!r}")
    version = version_name(change.name, digest_of(content_of("Secret", origin)))
    return ConfigObs(kind="Secret", name=change.name, version=version)


async def _version(client: KubeClient, namespace: str, kind: str, version: str, rollout_uid: str | None) -> VersionObs:
    obj = await get(client, kind, namespace, version)
    if obj is None:
        return VersionObs(kind=kind, version=version)
    owners = obj["metadata"].get("ownerReferences") or []
    return VersionObs(kind=kind, version=version, exists=True, uid=obj["metadata"].get("uid"),
                      ours=any(o.get("uid") == rollout_uid for o in owners),
                      adopted=any(o.get("kind") == "Deployment" for o in owners))


async def observe(client: KubeClient, namespace: str, spec: GuardedRolloutSpec, status: GuardedRolloutStatus,
                  rollout_uid: str | None, generation: int | None = None, request: bool = False,
                  target_template: Mapping[str, Any] | None = None,
                  ) -> tuple[tuple[ConfigObs, ...], tuple[VersionObs, ...]]:
    """spec.change's configuration resolved now, and the state of every copy it or status.config names."""
    change = spec.change
    if (not change.config_maps and not change.secrets and not status.config) or (
            status.stage.terminal and status.observed_generation == generation and not request):
        return (), ()   # an ended rollout reads nothing until its spec changes (or it is retried: a request)
    reads = {name for kind, name in references(target_template or {}) if kind == "ConfigMap"}
    resolved = [await _resolve_map(client, namespace, c, next(
        (r for r in sorted(reads) if r != c.name and source_of(r) == c.name), None)) for c in change.config_maps]
    resolved += [await _resolve_secret(client, namespace, s) for s in change.secrets]
    wanted = {(c.kind, c.version) for c in resolved if c.version}
    if status.stage != Stage.PENDING or status.config:
        wanted |= {(c.kind, c.version) for c in status.config}
    versions = [await _version(client, namespace, kind, v, rollout_uid) for kind, v in sorted(wanted)]
    return tuple(resolved), tuple(versions)


# -- acting -----------------------------------------------------------------------------------------

def _owner(kind: str, api_version: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": False,
            "blockOwnerDeletion": False}


async def ensure_version(client: KubeClient, namespace: str, action: EnsureConfigVersion) -> None:
    existing = await get(client, action.kind, namespace, action.version)
    ours = _owner("GuardedRollout", f"{GROUP}/{VERSION}", action.rollout_name, action.rollout_uid or "")
    if existing is not None:
        await _add_owner(client, namespace, action.kind, existing, ours, of=action.name)
        return
    body: dict[str, Any]
    if action.kind == "ConfigMap":
        content = dict(action.content or {})
        body = {"apiVersion": "v1", "kind": "ConfigMap"}
    else:
        origin = await get(client, "Secret", namespace, action.copy_from or "")
        if origin is None:
            raise ContentChanged(f"contentFrom: Secret {action.copy_from!r} is gone")
        content = content_of("Secret", origin)
        body = {"apiVersion": "v1", "kind": "Secret", "type": origin.get("type") or "Opaque"}
    if version_name(action.name, digest_of(content)) != action.version:
        raise ContentChanged(f"the content of {action.kind} {action.name!r} changed after version "
                             f"{action.version!r} was fixed")
    body.update({k: v for k, v in content.items() if v})
    body["immutable"] = True
    body["metadata"] = {"name": action.version, "namespace": namespace,
                        "labels": version_labels(action.name),
                        "annotations": {MADE_BY: action.rollout_uid or ""},
                        "ownerReferences": [ours] if action.rollout_uid else []}
    try:
        await client._call(api(client, action.kind, "create"), namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        raise Conflict(f"{action.kind} {action.version} was created meanwhile") from exc
    _log.info("configuration version made", kind=action.kind, name=action.name, version=action.version)


def verify_version(kind: str, obj: Mapping[str, Any], of: str) -> None:
    """An existing object is used as a version only if it is one: labelled as a version of `of`, immutable,
    and its content is what its name says (a user's object by that name is never read by pods)."""
    meta = obj["metadata"]
    name = meta["name"]
    if not is_version_of_labelled(meta.get("labels"), of):
        raise ContentChanged(f"{kind} {name!r} exists and is not a version of {of!r} (label {CONFIG_OF_LABEL}): "
                             "it is not used; remove that object or change the content")
    if not obj.get("immutable") or version_name(of, digest_of(content_of(kind, obj))) != name:
        raise ContentChanged(f"{kind} {name!r} exists but is not immutable or its content is not what its name "
                             "says: it is not used; remove that object")


async def _add_owner(client: KubeClient, namespace: str, kind: str, obj: dict[str, Any], owner: dict[str, Any],
                     *, of: str) -> None:
    meta = obj["metadata"]
    verify_version(kind, obj, of)
    owners = meta.get("ownerReferences") or []
    if not owner["uid"] or any(o.get("uid") == owner["uid"] for o in owners):
        return
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"], "ownerReferences": [*owners, owner]}}
    try:
        await client._call(api(client, kind, "patch"), meta["name"], namespace, patch)
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(f"{kind} {meta['name']} changed meanwhile") from exc
        raise


async def remove_version(client: KubeClient, namespace: str, action: RemoveConfigVersion) -> None:
    obj = await get(client, action.kind, namespace, action.version)
    if obj is None or obj["metadata"].get("uid") != action.uid:
        return
    owners = obj["metadata"].get("ownerReferences") or []
    if any(o.get("kind") == "Deployment" for o in owners) or not any(o.get("uid") == action.rollout_uid
                                                                    for o in owners):
        return  # adopted by a Deployment, or not ours: it stays
    others = [o for o in owners if o.get("uid") != action.rollout_uid]
    made_here = ((obj["metadata"].get("annotations") or {}).get(MADE_BY) or None) == action.rollout_uid
    if others or not made_here:  # another rollout still uses it, or another made it: only this one lets go
        patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"], "ownerReferences": others}}
        try:
            await client._call(api(client, action.kind, "patch"), action.version, namespace, patch)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        return
    try:
        await client._call(api(client, action.kind, "delete"), action.version, namespace,
                           body={"preconditions": {"uid": action.uid}})
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise
    _log.info("configuration version removed", kind=action.kind, version=action.version)


async def adopt(client: KubeClient, namespace: str, target: Mapping[str, Any], refs: tuple[ConfigRef, ...]) -> None:
    """Before the target reads them: its versions are owned by it, so they outlive the rollout."""
    meta = target["metadata"]
    owner = _owner("Deployment", "apps/v1", meta["name"], meta["uid"])
    for ref in refs:
        obj = await get(client, ref.kind, namespace, ref.version)
        if obj is None:
            raise ContentChanged(f"{ref.kind} version {ref.version!r} is gone: not promoting a template that reads it")
        await _add_owner(client, namespace, ref.kind, obj, owner, of=ref.name)


async def mirror(client: KubeClient, namespace: str, target: Mapping[str, Any], refs: tuple[ConfigRef, ...]) -> None:
    """After promotion: each changed object shows the promoted content, so that what `kubectl get` shows (and a
    GitOps tool compares) is what runs. Its old content is kept first as a version the target owns (a release
    of it undoes the change). Skipped while any pod (of any workload) reads the object itself: it would
    change under those pods at once."""
    pods = await client._items(client.core.list_namespaced_pod, namespace)
    for ref in refs:
        readers = sorted({p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
                          and (ref.kind, ref.name) in references({"spec": p.get("spec") or {}})})
        source = await get(client, ref.kind, namespace, ref.name)
        version = await get(client, ref.kind, namespace, ref.version)
        if readers or source is None or version is None or source.get("immutable"):
            if readers:
                _log.info("source not mirrored: pods still read it", kind=ref.kind, name=ref.name,
                          readers=readers[:10])
            continue
        if content_of(ref.kind, source) == content_of(ref.kind, version):
            continue
        await _snapshot(client, namespace, target, ref, source)
        body = {**source, **content_of(ref.kind, version)}
        await client._replace(api(client, ref.kind, "replace"), ref.name, namespace, body)
        _log.info("source mirrors the promoted version", kind=ref.kind, name=ref.name, version=ref.version)


async def _snapshot(client: KubeClient, namespace: str, target: Mapping[str, Any], ref: ConfigRef,
                    source: Mapping[str, Any]) -> None:
    content = content_of(ref.kind, source)
    name = version_name(ref.name, digest_of(content))
    if await get(client, ref.kind, namespace, name) is not None:
        return
    meta = target["metadata"]
    body: dict[str, Any] = {"apiVersion": "v1", "kind": ref.kind, "immutable": True,
                            **{k: v for k, v in content.items() if v},
                            "metadata": {"name": name, "namespace": namespace,
                                         "labels": version_labels(ref.name),
                                         "ownerReferences": [_owner("Deployment", "apps/v1", meta["name"],
                                                                    meta["uid"])]}}
    if ref.kind == "Secret":
        body["type"] = source.get("type") or "Opaque"
    try:
        await client._call(api(client, ref.kind, "create"), namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
