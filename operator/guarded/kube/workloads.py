"""Guarded workloads on the cluster: label what the policies guard, turn recorded desires into releases.

Level-based and idempotent: `sync_guards` can run at any time, any number of times, from any replica
that is active; it converges labels to the policies and each recorded desire to one GuardedRollout.
The decisions are pure (core/workload_guard.py); this module only reads and writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from guarded import faults, logs
from guarded.api.common import GROUP, VERSION
from guarded.api.policy import POLICY_PLURAL, RolloutPolicySpec
from guarded.api.rollout import PLURAL
from guarded.core.config_refs import references, source_of
from guarded.core.templates import ROLE_LABEL
from guarded.core.workload_guard import DESIRED_HASH, GUARDED_LABEL, guarding, next_step, template_of
from guarded.kube.client import KubeClient
from guarded.kube.config_guard import release_config

_log = logs.logger()


async def _json(client: KubeClient, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    resp = await client._call(fn, *args, _preload_content=False, **kwargs)
    return json.loads(resp.data)


async def _set_label(client: KubeClient, patch_fn: Any, name: str, namespace: str, on: bool) -> None:
    body = {"metadata": {"labels": {GUARDED_LABEL: "true" if on else None}}}
    try:
        await client._call(patch_fn, name, namespace, body)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _policies(items: Iterable[Mapping[str, Any]]) -> list[tuple[str, RolloutPolicySpec]]:
    out = []
    for item in items:
        try:
            out.append((str(item["metadata"]["name"]), RolloutPolicySpec.model_validate(item.get("spec") or {})))
        except ValueError:
            continue  # an unreadable policy guards nothing here; the rollouts' gates report it
    return out


async def load_policies(client: KubeClient) -> list[tuple[str, RolloutPolicySpec]]:
    return _policies(await client.list_cluster_custom(POLICY_PLURAL))


async def namespace_labels(client: KubeClient) -> dict[str, dict[str, str]]:
    return {n["metadata"]["name"]: n["metadata"].get("labels") or {}
            for n in (await _json(client, client.core.list_namespace)).get("items", [])}


async def guard_one(client: KubeClient, d: Mapping[str, Any], policies: list[tuple[str, RolloutPolicySpec]],
                    ns_labels: Mapping[str, str], *, edits: bool = False) -> set[tuple[str, str, str]]:
    """One Deployment: its label follows the policies; when guarded, the configuration it reads is labelled
    and its recorded desire released. Returns the (kind, namespace, name) of that configuration."""
    meta = d["metadata"]
    ns, name, labels = meta["namespace"], meta["name"], meta.get("labels") or {}
    canary = labels.get(ROLE_LABEL) == "canary"  # ours: changed only by the rollout that owns it
    guarded = bool(guarding(policies, ns_labels, labels)) and not meta.get("deletionTimestamp") and not canary
    if (labels.get(GUARDED_LABEL) == "true") != guarded:
        await _set_label(client, client.apps.patch_namespaced_deployment, name, ns, guarded)
        _log.info("guarded workload" if guarded else "workload no longer guarded", namespace=ns, deployment=name)
    if not guarded:
        return set()
    # What the pods read, and what a version they read is of (an edit of it is a release of the next version).
    config = {(kind.lower(), ns, n) for kind, name in references(template_of(d)) for n in {name, source_of(name)}}
    await _label_config(client, config)
    await release_desire(client, d, policies, ns_labels)
    for kind, _, name in sorted(config) if edits else ():  # edits recorded while the operator was away
        await release_config(client, "ConfigMap" if kind == "configmap" else "Secret", ns, name,
                             defaults_for(policies, ns_labels))
    return config


async def sync_guards(client: KubeClient, policies: list[tuple[str, RolloutPolicySpec]],
                      namespaces: Mapping[str, Mapping[str, str]]) -> None:
    """Every Deployment's label follows the policies (and the configuration guarded ones read)."""
    selector = {} if any(spec.guard_workloads for _, spec in policies) else {"label_selector": f"{GUARDED_LABEL}=true"}
    deployments = (await _json(client, client.apps.list_deployment_for_all_namespaces, **selector)).get("items", [])
    wanted: set[tuple[str, str, str]] = set()
    for d in deployments:
        wanted |= await guard_one(client, d, policies, namespaces.get(d["metadata"]["namespace"], {}), edits=True)
    await _sync_config_labels(client, wanted)


async def _label_config(client: KubeClient, config: set[tuple[str, str, str]]) -> None:
    for kind, ns, name in sorted(config):
        if kind == "secret":
            if (kind, ns, name) in _LABELLED_SECRETS:
                continue
            await _set_label(client, client.core.patch_namespaced_secret, name, ns, True)
            _LABELLED_SECRETS.add((kind, ns, name))
        elif (kind, ns, name) not in _LABELLED_MAPS:
            await _set_label(client, client.core.patch_namespaced_config_map, name, ns, True)
            _LABELLED_MAPS.add((kind, ns, name))


async def _sync_config_labels(client: KubeClient, wanted: set[tuple[str, str, str]]) -> None:
    """ConfigMaps no guarded Deployment reads lose the label. (Secrets are never listed or read, least
    privilege: one no longer read keeps its label until an admin removes it.)"""
    labelled = (await _json(client, client.core.list_config_map_for_all_namespaces,
                            label_selector=f"{GUARDED_LABEL}=true")).get("items", [])
    have = {("configmap", i["metadata"]["namespace"], i["metadata"]["name"]) for i in labelled}
    _LABELLED_MAPS.intersection_update(have)
    for _, ns, name in sorted(have - wanted):
        await _set_label(client, client.core.patch_namespaced_config_map, name, ns, False)
        _LABELLED_MAPS.discard(("configmap", ns, name))


# What this process labelled (a restart labels them again; a label an admin removed comes back on the
# next full sync for ConfigMaps, on the next restart for Secrets).
_LABELLED_SECRETS: set[tuple[str, str, str]] = set()
_LABELLED_MAPS: set[tuple[str, str, str]] = set()


async def release_desire(client: KubeClient, deployment: Mapping[str, Any],
                         policies: list[tuple[str, RolloutPolicySpec]], ns_labels: Mapping[str, str]) -> None:
    """A recorded desire on a guarded Deployment becomes (or has) its GuardedRollout; markers follow it."""
    meta = deployment["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if DESIRED_HASH not in (meta.get("annotations") or {}):
        return
    rollouts = {r["metadata"]["name"]: r for r in await client.list_namespaced_custom(ns, PLURAL)}
    step = next_step(deployment, rollouts, _defaults(policies, ns_labels, meta.get("labels") or {}))
    if step.supersede is not None:
        try:
            await client._call(client.custom.delete_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                               step.supersede)
            _log.info("superseded by a newer change", namespace=ns, deployment=name, rollout=step.supersede)
        except ApiException as exc:
            if exc.status != 404:
                raise
    if step.create is not None:
        faults.hit("release", stage=None, wave=None, rollout=name)  # tests: a desire recorded, its release not made
        try:
            await client._call(client.custom.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, step.create)
            _log.info("plain apply recorded as a release", namespace=ns, deployment=name,
                      rollout=step.create["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 409:  # already there: created by an earlier pass
                raise
    if step.annotate:
        current = meta.get("annotations") or {}
        changes = {k: v for k, v in step.annotate.items() if current.get(k) != v}
        if changes:
            await client._call(client.apps.patch_namespaced_deployment, name, ns,
                               {"metadata": {"annotations": changes}})


def defaults_for(policies: list[tuple[str, RolloutPolicySpec]], namespace_labels: Mapping[str, str]) -> Any:
    """releaseDefaults by the labels of the Deployment a release is for."""
    return lambda labels: _defaults(policies, namespace_labels, labels)


def _defaults(policies: list[tuple[str, RolloutPolicySpec]], namespace_labels: Mapping[str, str],
              labels: Mapping[str, str]) -> dict[str, Any]:
    """Waves, analysis and deadline for a release made of a plain apply: the guarding policies'
    releaseDefaults (the first policy by name that sets a field wins; the gates still apply every rule)."""
    out: dict[str, Any] = {}
    by_name = dict(policies)
    for name in guarding(policies, namespace_labels, labels):
        defaults = by_name[name].release_defaults
        for key, value in (defaults.to_wire() if defaults is not None else {}).items():
            out.setdefault(key, value)
    return out
