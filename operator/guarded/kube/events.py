"""Kubernetes Events for every transition the core records.

Identical Events are aggregated as client-go's EventRecorder does (its correlator's event logger):
an Event repeated for the same involved object with the same type, reason and message is not a new
object but the existing one with `count` + 1 and a new `lastTimestamp` (`firstTimestamp` kept). The
aggregation key is the Event's name, derived from that key, so no cache is needed and a restarted
operator (or another replica) keeps counting on the same object. The window is the Events' own
lifetime: the API server deletes an Event --event-ttl (1 h by default) after its last update.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from guarded.core.actions import Event
from guarded.kube.client import KubeClient

COMPONENT = "guarded-rollouts"
NAME_LIMIT = 253        # an Event's name is a DNS subdomain
HASH_CHARS = 16
REASON_LIMIT = 128
MESSAGE_LIMIT = 1024
UPDATE_ATTEMPTS = 3     # another writer bumped the same Event meanwhile: read it again


def event_name(obj: dict[str, Any], event: Event) -> str:
    """`<object name>.<16 hex>`: the same for the same (object, type, reason, message), as client-go's
    aggregation key (the object's uid included: a rollout recreated under the same name starts anew)."""
    meta = obj["metadata"]
    key = "\x00".join((
        str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(meta.get("namespace", "")),
        str(meta["name"]), str(meta.get("uid") or ""), COMPONENT,
        event.type, event.reason[:REASON_LIMIT], event.message[:MESSAGE_LIMIT],
    ))
    digest = hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]
    stem = meta["name"][:NAME_LIMIT - HASH_CHARS - 1].rstrip(".-")
    return f"{stem}.{digest}"


def event_body(obj: dict[str, Any], event: Event, now: datetime) -> kubernetes.client.CoreV1Event:
    """The first occurrence of an Event."""
    meta = obj["metadata"]
    return kubernetes.client.CoreV1Event(
        metadata=kubernetes.client.V1ObjectMeta(name=event_name(obj, event), namespace=meta["namespace"]),
        involved_object=kubernetes.client.V1ObjectReference(
            api_version=obj["apiVersion"], kind=obj["kind"], name=meta["name"],
            namespace=meta["namespace"], uid=meta.get("uid"), resource_version=meta.get("resourceVersion"),
        ),
        type=event.type, reason=event.reason[:REASON_LIMIT], message=event.message[:MESSAGE_LIMIT],
        first_timestamp=now, last_timestamp=now, count=1,
        source=kubernetes.client.V1EventSource(component=COMPONENT),
        reporting_component=COMPONENT, reporting_instance=COMPONENT,
    )


def repeat_patch(existing: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The merge patch that records one more occurrence on an existing Event. Its resourceVersion
    makes it conditional: if another writer counted meanwhile, the patch fails (409) and is redone."""
    return {
        "metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]},
        "count": int(existing.get("count") or 1) + 1,
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def _record(client: KubeClient, namespace: str, body: kubernetes.client.CoreV1Event, now: datetime) -> None:
    name = body.metadata.name
    for _ in range(UPDATE_ATTEMPTS):
        try:
            await client._call(client.core.create_namespaced_event, namespace, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = await client._get_json(client.core.read_namespaced_event, name, namespace)
        if existing is None:
            continue  # expired (or deleted) since: create it again
        try:
            await client._call(client.core.patch_namespaced_event, name, namespace, repeat_patch(existing, now))
            return
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise


async def post_events(client: KubeClient, obj: dict[str, Any], events: tuple[Event, ...]) -> None:
    namespace = obj["metadata"]["namespace"]
    now = datetime.now(UTC)
    for event in events:
        try:
            await _record(client, namespace, event_body(obj, event, now), now)
        except ApiException:
            # Events are best effort; the same facts are in status.history.
            continue
