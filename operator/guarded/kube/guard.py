"""Gathering what the pre-flight gates need: policies, approvals, the queue, the service, a dry run.

The namespace, policies, approvals, Services and pods come from the operator's watches (kube/cache.py:
synced, and never older than the operator's own writes; else from the API server). The queue, the
other rollouts' status, is read fresh from the API server (not from a cache), so that two rollouts
deciding at once about one concurrency slot see each other's latest status. What is read here is
judged in core/gates; nothing is decided in this module.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from guarded.api.errors import describe
from guarded.api.policy import (
    APPROVAL_PLURAL,
    POLICY_PLURAL,
    PolicySelector,
    RolloutApprovalSpec,
    RolloutPolicySpec,
)
from guarded.api.rollout import PLURAL, GuardedRolloutSpec, authors_in
from guarded.api.stages import Stage, stage_in
from guarded.core.config_checks import schema_refs
from guarded.core.config_refs import references, rewrite
from guarded.core.observations import ApprovalObs, ConfigObs, GuardObservation, QueueEntry
from guarded.core.policy import NamedPolicy, UnreadablePolicy
from guarded.core.templates import canary_deployment, canary_name, changed_template
from guarded.kube.client import KubeClient

# The API server names an object created with generateName `prefix[:58]` + 5 random characters
# (apiserver/pkg/storage/names: maxGeneratedNameLength = 63 - 5), from this alphabet (utilrand), before
# validating it: the name, and so the random part, is in every message about that object.
GENERATED_PREFIX_MAX = 58
GENERATED_SUFFIX = "[a-z0-9]{5}"
# An aggregate of field errors: `<Kind> "<name>" is invalid: [<error>, <error>, ...]`.
_AGGREGATE = re.compile(r"^(?P<head>.*? is invalid: )\[(?P<errors>.*)\](?P<tail>\s*)$", re.DOTALL)
# Where one field error starts inside the aggregate: ", <field.path[0].x>: ".
_NEXT_ERROR = re.compile(r", (?=[A-Za-z][\w.\[\]/-]*: )")


def _tuple(names: list[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


def _policies(items: list[dict[str, Any]]) -> tuple[tuple[NamedPolicy, ...], tuple[UnreadablePolicy, ...]]:
    """Policies this operator can read, and those it cannot (a newer schema): skipping those would open
    their gates, so the core holds the rollouts they may select."""
    readable, unreadable = [], []
    for item in items:
        name, spec = item["metadata"]["name"], item.get("spec") or {}
        try:
            readable.append(NamedPolicy(name=name, spec=RolloutPolicySpec.model_validate(spec)))
        except ValidationError as err:
            try:
                selector: PolicySelector | None = PolicySelector.model_validate(spec.get("selector") or {})
            except ValidationError:
                selector = None
            # The fields it cannot read, named (spec.freezeWindows[0].start: ...): the held rollouts say what to fix.
            unreadable.append(UnreadablePolicy(name=name, selector=selector, error=describe(err)))
    return tuple(readable), tuple(unreadable)


def _approvals(items: list[dict[str, Any]], rollout: str) -> tuple[ApprovalObs, ...]:
    out = []
    for item in items:
        try:
            spec = RolloutApprovalSpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue
        if spec.rollout != rollout or item["metadata"].get("deletionTimestamp"):
            continue
        out.append(ApprovalObs(name=item["metadata"]["name"], approver=spec.approver,
                               groups=tuple(spec.approver_groups or ()), revision=spec.revision,
                               rollout_uid=spec.rollout_uid))
    return tuple(out)


def _queue(items: list[dict[str, Any]]) -> tuple[QueueEntry, ...]:
    out = []
    for item in items:
        meta, status = item["metadata"], item.get("status") or {}
        policies = tuple((status.get("policy") or {}).get("policies") or ())
        if not policies:
            continue
        stage = stage_in(status)
        gates = status.get("gates") or []
        failing = [g for g in gates if not g.get("passed")]
        # Paused rollouts keep no place in the queue: one must not hold every later rollout by pausing.
        waiting = bool(failing) and all(g.get("gate") == "Concurrency" for g in failing) and not status.get("paused")
        # A rollout holds a concurrency slot while it is active: from its first canary pod until it is clean.
        out.append(QueueEntry(namespace=meta["namespace"], name=meta["name"],
                              created=meta.get("creationTimestamp", ""), policies=policies,
                              active=stage is not None and stage.active, waiting=waiting and stage == Stage.PENDING))
    return tuple(out)


async def _schemas(client: KubeClient, policies: tuple[NamedPolicy, ...]) -> dict[tuple[str, str, str], str | None]:
    """The JSON Schemas any policy's configValidation names (None: the ConfigMap or its key is missing)."""
    out: dict[tuple[str, str, str], str | None] = {}
    for key in sorted(schema_refs((p.name, rule) for p in policies for rule in p.spec.config_validation)):
        namespace, name, item = key
        obj = await client._get_json(client.core.read_namespaced_config_map, name, namespace)
        out[key] = ((obj or {}).get("data") or {}).get(item)
    return out


async def _dry_run_config(client: KubeClient, namespace: str, c: ConfigObs) -> str | None:
    """The API server's word on the ConfigMap version the change makes (keys, sizes, admission)."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
            "metadata": {"name": c.version, "namespace": namespace},
            **{k: v for k, v in (c.content or {}).items() if v}}
    try:
        await client._call(client.core.create_namespaced_config_map, namespace, body, dry_run="All")
    except ApiException as exc:
        if exc.status == 409:
            return None  # the same content exists as a version already
        if exc.status in (400, 403, 422):
            try:
                return f"ConfigMap {c.name}: " + str(json.loads(exc.body).get("message") or exc.reason)
            except (ValueError, TypeError):
                return f"ConfigMap {c.name}: {exc.reason}"
        raise
    return None


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def stable_dry_run_error(message: str, generate_name: str, placeholder: str) -> str:
    """The API server's dry-run error, the same for the same state: the generated name (the
    generateName prefix, truncated as the server does, plus 5 random characters) becomes
    `placeholder` wherever it occurs, and the field errors of an aggregate are sorted (the server
    lists a map's, e.g. labels', in Go's random map order). The message reaches status and Events:
    a random part in it changes status on every reconcile, and each change is a write and an Event."""
    prefix = re.escape(generate_name[:GENERATED_PREFIX_MAX])
    generated = re.compile(rf"(?<![a-z0-9.-]){prefix}{GENERATED_SUFFIX}(?![a-z0-9-])")
    message = generated.sub(lambda _: placeholder, message)
    aggregate = _AGGREGATE.match(message)
    if aggregate:
        errors = sorted(_NEXT_ERROR.split(aggregate["errors"]))
        message = f"{aggregate['head']}[{', '.join(errors)}]{aggregate['tail']}"
    return message


def routing_selectors(services: list[dict[str, Any]], template_labels: dict[str, str]) -> list[dict[str, str]]:
    """The selectors of the Services that send traffic to the target's pods."""
    return [s["spec"].get("selector") or {} for s in services
            if _selects(s["spec"].get("selector") or {}, template_labels)]


def service_pods(pods_by_selector: list[list[dict[str, Any]]]) -> int:
    """Live pods behind any of those Services, each counted once (0: no such Service)."""
    live = {p["metadata"]["uid"] for pods in pods_by_selector for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")}
    return len(live)


async def gather(client: KubeClient, *, obj: dict[str, Any], spec: GuardedRolloutSpec,
                 target: dict[str, Any], config: tuple[ConfigObs, ...] = ()) -> GuardObservation:
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    ns = await client._observed("namespaces", "", namespace, lambda _, n: client.get_namespace(n))
    policies, unreadable = _policies(await client.observed_list(
        POLICY_PLURAL, "", lambda: client.list_cluster_custom(POLICY_PLURAL)))
    approvals = _approvals(await client.observed_list(
        APPROVAL_PLURAL, namespace, lambda: client.list_namespaced_custom(namespace, APPROVAL_PLURAL)), name)
    queue = _queue(await client.list_cluster_custom(PLURAL)) if policies else ()
    template = target.get("spec", {}).get("template", {})
    consumers = {c.name: await client.observed_deployment(namespace, c.name) for c in spec.consumers}
    services = await client.observed_list("services", namespace, lambda: client.list_services(namespace))
    selectors = [sel for t in [template, *(((d or {}).get("spec") or {}).get("template") or {}
                                           for d in consumers.values())]
                 for sel in routing_selectors(services, (t.get("metadata") or {}).get("labels") or {})]
    pods = await client.observed_list("pods", namespace, lambda: client.list_pods(namespace)) if selectors else []
    behind = service_pods([[p for p in pods if _selects(sel, (p.get("metadata") or {}).get("labels") or {})]
                           for sel in selectors])
    dry_run_error: str | None
    try:
        manifest = canary_deployment(
            rollout_name=name, rollout_uid=meta.get("uid"), namespace=namespace, target_name=spec.target.name,
            target_selector=target.get("spec", {}).get("selector", {}),
            template=rewrite(changed_template(template, spec.change, "dry-run"),
                             {(c.kind, c.name): c.version for c in config if c.version}),
            replicas=1, revision="dry-run")
    except Exception as exc:  # the change does not apply: core/gates reports it precisely
        dry_run_error = str(exc)
    else:
        placeholder = manifest["metadata"].pop("name")
        generate_name = f"{canary_name(spec.target.name)}-"
        manifest["metadata"]["generateName"] = generate_name
        dry_run_error = await client.dry_run_create_deployment(namespace, manifest)
        if dry_run_error is not None:
            dry_run_error = stable_dry_run_error(dry_run_error, generate_name, placeholder)
        for c in config:
            if dry_run_error is None and c.content is not None and c.version:
                dry_run_error = await _dry_run_config(client, namespace, c)
    schemas = await _schemas(client, policies) if config else {}
    return GuardObservation(
        config_schemas=schemas,
        consumers={name: None if d is None or d["metadata"].get("deletionTimestamp") else (
            int((d.get("spec") or {}).get("replicas", 1) or 0),
            frozenset(references((d.get("spec") or {}).get("template") or {})), d["metadata"].get("labels") or {})
            for name, d in consumers.items()},
        created=meta.get("creationTimestamp", ""), namespace_labels=(ns or {}).get("metadata", {}).get("labels") or {},
        policies=policies, unreadable_policies=unreadable, authors=_tuple(authors_in(meta.get("annotations"))),
        approvals=approvals, queue=queue,
        service_pods=behind or None, dry_run_done=True, dry_run_error=dry_run_error,
    )
