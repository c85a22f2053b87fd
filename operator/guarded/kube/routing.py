"""Routing by weight, the shell's half: read the HTTPRoute, the namespace's Services and the target's current
ReplicaSet; carry out the core's routing actions (core/routing.py).

Every write reads the object first and replaces it with that read's resourceVersion, so nothing slips in
between; ownership is checked on the object as read: the canary Service is changed or deleted only while its
controller ownerReference is the acting rollout (delete with a uid precondition), the stable Service's pin is
written only when no other rollout's pin is on it and removed only when it is ours.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from guarded.core.actions import ApplyService, DeleteService, PinSelector, SetRouteWeights, UnpinSelector
from guarded.core.observations import BackendRef, RouteState, RoutingObservation, ServiceState
from guarded.core.routing import PIN_ANNOTATION, PIN_KEY
from guarded.kube.client import Conflict, KubeClient
from guarded.kube.patches import json_copy

GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
RETRIES = 5


class NotOurs(Exception):
    """The object is not (or no longer) this rollout's to change."""


# -- reading -------------------------------------------------------------------------------------------

def route_state(obj: dict[str, Any]) -> RouteState:
    rules = []
    for rule in (obj.get("spec") or {}).get("rules") or []:
        refs = tuple(BackendRef(name=str(b.get("name", "")), kind=str(b.get("kind", "Service")),
                                group=str(b.get("group", "")), namespace=b.get("namespace"), port=b.get("port"),
                                weight=b.get("weight")) for b in rule.get("backendRefs") or [])
        rules.append(refs)
    return RouteState(name=obj["metadata"]["name"], rules=tuple(rules))


def service_state(obj: dict[str, Any]) -> ServiceState:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    return ServiceState(name=meta["name"], uid=meta.get("uid"), owner_uid=owner.get("uid") if owner else None,
                        selector=dict(spec.get("selector") or {}), annotations=dict(meta.get("annotations") or {}),
                        ports=tuple(spec.get("ports") or ()), deleting=meta.get("deletionTimestamp") is not None)


def current_pod_hash(target: dict[str, Any] | None, replica_sets: list[dict[str, Any]]) -> str | None:
    """The pod-template-hash of the target's ReplicaSet of its current revision (None while unknown)."""
    if target is None:
        return None
    uid = target["metadata"].get("uid")
    revision = (target["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
    for rs in replica_sets:
        meta = rs["metadata"]
        owned = any(r.get("uid") == uid and r.get("controller") for r in meta.get("ownerReferences") or [])
        if owned and revision and (meta.get("annotations") or {}).get(REVISION_ANNOTATION) == revision:
            return (meta.get("labels") or {}).get(PIN_KEY)
    return None


async def observe(client: KubeClient, namespace: str, obj: dict[str, Any],
                  target: dict[str, Any] | None) -> RoutingObservation | None:
    """What routing reads, for a rollout with spec.trafficRouting or whose routing is still in force
    (status.traffic: the field was removed mid-rollout, and what it changed must still be undone)."""
    routing = (obj.get("spec") or {}).get("trafficRouting") or {}
    in_force = (obj.get("status") or {}).get("traffic") or {}
    name = in_force.get("route") or (routing.get("httpRoute") or {}).get("name")
    if not name:
        return None
    route, error = None, None
    try:
        found = await client._get_json(client.custom.get_namespaced_custom_object, GATEWAY_GROUP, GATEWAY_VERSION,
                                       namespace, HTTPROUTES, name)
        route = route_state(found) if found is not None else None
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise
        error = f"{exc.status} {exc.reason}" + (" (are the Gateway API CRDs installed?)" if exc.status == 404 else "")
    services = {s["metadata"]["name"]: service_state(s) for s in await client.list_services(namespace)}
    pod_hash = None
    if target is not None:
        labels = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        replica_sets = await client._items(client.apps.list_namespaced_replica_set, namespace, label_selector=selector)
        pod_hash = current_pod_hash(target, replica_sets)
    return RoutingObservation(route=route, route_error=error, services=services, stable_pod_hash=pod_hash)


# -- writing -------------------------------------------------------------------------------------------

async def _read_change_replace(read: Callable[[], Any], write: Callable[[dict[str, Any]], Any],
                               change: Callable[[dict[str, Any]], dict[str, Any] | None], what: str) -> None:
    for _ in range(RETRIES):
        current = await read()
        if current is None:
            return
        body = change(json_copy(current))
        if body is None:
            return
        body.pop("status", None)
        try:
            await write(body)
            return
        except Conflict:
            continue
    raise Conflict(f"could not update {what} after {RETRIES} conflicts")


def _service_io(client: KubeClient, namespace: str, name: str) -> tuple[Any, Any]:
    async def read() -> dict[str, Any] | None:
        return await client._get_json(client.core.read_namespaced_service, name, namespace)

    async def write(body: dict[str, Any]) -> None:
        await client._replace(client.core.replace_namespaced_service, name, namespace, body)
    return read, write


async def apply_service(client: KubeClient, namespace: str, action: ApplyService) -> None:
    manifest = action.manifest
    name, ours = manifest["metadata"]["name"], manifest["metadata"]["ownerReferences"][0]["uid"]

    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        refs = body["metadata"].get("ownerReferences") or []
        owner: dict[str, Any] = next((r for r in refs if r.get("controller")), {})
        if owner.get("uid") != ours:
            raise NotOurs(f"Service {name} is not owned by rollout uid {ours}: not changing it")
        if body["metadata"].get("deletionTimestamp") or body["spec"].get("selector") == manifest["spec"]["selector"]:
            return None
        body["spec"]["selector"] = manifest["spec"]["selector"]
        return body

    read, write = _service_io(client, namespace, name)
    if await read() is None:
        try:
            await client._call(client.core.create_namespaced_service, namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return
    await _read_change_replace(read, write, change, f"Service {name}")


async def delete_service(client: KubeClient, namespace: str, action: DeleteService) -> None:
    try:
        await client._call(client.core.delete_namespaced_service, action.name, namespace,
                           body={"preconditions": {"uid": action.uid}})
    except ApiException as exc:
        if exc.status not in (404, 409):   # gone, or another object by that name now
            raise


async def pin(client: KubeClient, namespace: str, action: PinSelector) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        annotations = body["metadata"].get("annotations") or {}
        holder = annotations.get(PIN_ANNOTATION)
        if holder not in (None, action.rollout_uid):
            raise NotOurs(f"Service {action.service} is pinned by rollout uid {holder}: not changing it")
        selector = body["spec"].get("selector") or {}
        if holder == action.rollout_uid and selector.get(action.key) == action.value:
            return None
        body["metadata"]["annotations"] = {**annotations, PIN_ANNOTATION: action.rollout_uid}
        body["spec"]["selector"] = {**selector, action.key: action.value}
        return body

    read, write = _service_io(client, namespace, action.service)
    await _read_change_replace(read, write, change, f"Service {action.service}")


async def unpin(client: KubeClient, namespace: str, action: UnpinSelector) -> None:
    def change(body: dict[str, Any]) -> dict[str, Any] | None:
        annotations = body["metadata"].get("annotations") or {}
        if annotations.get(PIN_ANNOTATION) != action.rollout_uid:
            return None   # not ours (any more): nothing to undo
        selector = dict(body["spec"].get("selector") or {})
        if selector.get(action.key) == action.value:
            del selector[action.key]
        body["spec"]["selector"] = selector
        del annotations[PIN_ANNOTATION]
        return body

    read, write = _service_io(client, namespace, action.service)
    await _read_change_replace(read, write, change, f"Service {action.service}")


def set_weights(route: dict[str, Any], action: SetRouteWeights) -> dict[str, Any] | None:
    """The route's body with the action's weights (None when it already has them). Pure, for the tests."""
    rules = (route.get("spec") or {}).get("rules") or []
    before = copy.deepcopy(rules)
    targets = set(action.rules)
    if action.canary_weight in (0, None):
        # Taking the weight off the canary (or its backendRef away) reaches every rule holding it, as the route
        # is now: someone may have inserted or removed a rule since the indexes were decided.
        targets |= {i for i, rule in enumerate(rules)
                    if any(b.get("name") == action.canary_service for b in rule.get("backendRefs") or [])}
    for i in sorted(targets):
        if i >= len(rules):
            continue
        refs = rules[i].get("backendRefs") or []
        stable = next((b for b in refs if b.get("name") == action.service and b.get("kind", "Service") == "Service"),
                      None)
        if stable is None:
            continue
        others = [b for b in refs if b.get("name") != action.canary_service]
        if action.canary_weight is None:
            _weight(stable, action.stable_weight)
            rules[i]["backendRefs"] = others
            continue
        canary = next((b for b in refs if b.get("name") == action.canary_service), None)
        if canary is None and action.canary_weight == 0:
            continue   # nothing of the canary's on this rule: nothing to withdraw
        _weight(stable, 100 - action.canary_weight)
        if canary is None:
            canary = {k: v for k, v in stable.items() if k in ("group", "kind", "port")}
            canary["name"] = action.canary_service
        canary["weight"] = action.canary_weight
        rules[i]["backendRefs"] = [*others, canary]
    return route if rules != before else None


def _weight(ref: dict[str, Any], weight: int | None) -> None:
    if weight is None:
        ref.pop("weight", None)
    else:
        ref["weight"] = weight


async def apply_weights(client: KubeClient, namespace: str, action: SetRouteWeights) -> None:
    async def read() -> dict[str, Any] | None:
        return await client._get_json(client.custom.get_namespaced_custom_object, GATEWAY_GROUP, GATEWAY_VERSION,
                                      namespace, HTTPROUTES, action.route)

    async def write(body: dict[str, Any]) -> None:
        await client._replace(client.custom.replace_namespaced_custom_object, GATEWAY_GROUP, GATEWAY_VERSION,
                              namespace, HTTPROUTES, action.route, body)

    await _read_change_replace(read, write, lambda body: set_weights(body, action), f"HTTPRoute {action.route}")
