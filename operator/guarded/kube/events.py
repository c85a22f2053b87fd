"""Kubernetes Events for every transition the core records.

Identical Events are aggregated as client-go's EventRecorder does (its correlator's event logger):
an Event repeated for the same involved object with the same type, reason and message is not a new
object but the existing one with `count` + 1 and a new `lastTimestamp` (`firstTimestamp` kept). The
aggregation key is the Event's name, derived from that key, so no cache is needed and a restarted
operator (or another replica) keeps counting on the same object. The window is the Events' own
lifetime: the API server deletes an Event --event-ttl (1 h by default) after its last update.

Like client-go, the operator remembers the Events it wrote (their resourceVersion and count, the last
KNOWN_LIMIT of them): a repeat is then one conditional patch, not a create refused as existing, a read and a
patch. What it does not know (a restart, another replica's Event, an Event that expired) costs the three as
before; its memory is never trusted beyond the resourceVersion the patch is conditional on.

A decision's Events are sent in the background (`submit_events`), as client-go's recorder sends them from
its broadcaster's queue: a reconcile does not wait for them. At N = 335 posting them in the reconcile was a
fifth of its time under load (issue 11). Their timestamps are the decision's; the same facts are in
`status.history`, which is written before they are handed over.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson
from kubernetes.client.rest import ApiException

from guarded import logs
from guarded.core.actions import Event
from guarded.kube.client import KubeClient

COMPONENT = "guarded-rollouts"
NAME_LIMIT = 253        # an Event's name is a DNS subdomain
HASH_CHARS = 16
REASON_LIMIT = 128
MESSAGE_LIMIT = 1024
UPDATE_ATTEMPTS = 3     # another writer bumped the same Event meanwhile: read it again
KNOWN_LIMIT = 4096      # Events remembered (client-go's correlator keeps as many)
SENDERS = 4             # Events being posted at once, in the background
WAITING_LIMIT = 1000    # Events waiting to be posted; beyond it new ones are dropped, as client-go drops them

Known = tuple[str, int]   # an Event's resourceVersion and count, as the operator last wrote or read them


class KnownEvents:
    """The Events this operator wrote lately, by (namespace, name): the least recently written go first."""

    def __init__(self, limit: int = KNOWN_LIMIT) -> None:
        self.limit = limit
        self._known: OrderedDict[tuple[str, str], Known] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Known | None:
        return self._known.get(key)

    def remember(self, key: tuple[str, str], event: dict[str, Any]) -> None:
        version = (event.get("metadata") or {}).get("resourceVersion")
        if not version:
            self._known.pop(key, None)
            return
        self._known[key] = (str(version), int(event.get("count") or 1))
        self._known.move_to_end(key)
        while len(self._known) > self.limit:
            self._known.popitem(last=False)

    def forget(self, key: tuple[str, str]) -> None:
        self._known.pop(key, None)

    def __len__(self) -> int:
        return len(self._known)


_KNOWN: weakref.WeakKeyDictionary[KubeClient, KnownEvents] = weakref.WeakKeyDictionary()


def known_events(client: KubeClient) -> KnownEvents:
    """What this client wrote (each operator's client, and each test's fake API, its own)."""
    memory = _KNOWN.get(client)
    if memory is None:
        memory = _KNOWN[client] = KnownEvents()
    return memory


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


def event_body(obj: dict[str, Any], event: Event, now: datetime) -> dict[str, Any]:
    """The first occurrence of an Event (core/v1, as the API server stores it)."""
    meta = obj["metadata"]
    at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                "namespace": meta["namespace"], "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name(obj, event), "namespace": meta["namespace"]},
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "type": event.type, "reason": event.reason[:REASON_LIMIT], "message": event.message[:MESSAGE_LIMIT],
        "firstTimestamp": at, "lastTimestamp": at, "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": COMPONENT,
    }


def repeat_patch(existing: dict[str, Any] | Known, now: datetime) -> dict[str, Any]:
    """The merge patch that records one more occurrence on an existing Event (as read, or as remembered). Its
    resourceVersion makes it conditional: if another writer counted meanwhile, the patch fails (409) and is
    redone."""
    version, count = existing if isinstance(existing, tuple) else repeat_of(existing)
    return {
        "metadata": {"resourceVersion": version},
        "count": count + 1,
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def _written(client: KubeClient, fn: Any, *args: Any) -> dict[str, Any]:
    """A write's answer, the Event as stored (empty if the answer is not one)."""
    resp = await client._call(fn, *args, _preload_content=False)
    try:
        answer = orjson.loads(getattr(resp, "data", b"") or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


async def _record(client: KubeClient, namespace: str, body: dict[str, Any], now: datetime) -> None:
    name = body["metadata"]["name"]
    key, memory = (namespace, name), known_events(client)
    known = memory.get(key)
    for attempt in range(UPDATE_ATTEMPTS):
        if known is None:
            try:
                memory.remember(key, await _written(client, client.core.create_namespaced_event, namespace, body))
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = await client._get_json(client.core.read_namespaced_event, name, namespace)
            if existing is None:
                continue  # expired (or deleted) since: create it again
            known = repeat_of(existing)
        try:
            memory.remember(key, await _written(client, client.core.patch_namespaced_event, name, namespace,
                                                repeat_patch(known, now)))
            return
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
            memory.forget(key)
            if exc.status == 404:
                known = None  # expired since: create it again
                continue
        if attempt == UPDATE_ATTEMPTS - 1:
            return   # best effort: given up, not read once more for nothing
        # Another writer counted meanwhile: read it again.
        existing = await client._get_json(client.core.read_namespaced_event, name, namespace)
        known = None if existing is None else repeat_of(existing)


def repeat_of(existing: dict[str, Any]) -> Known:
    return str(existing["metadata"]["resourceVersion"]), int(existing.get("count") or 1)


async def post_events(client: KubeClient, obj: dict[str, Any], events: tuple[Event, ...]) -> None:
    namespace = obj["metadata"]["namespace"]
    now = datetime.now(UTC)
    for event in events:
        try:
            await _record(client, namespace, event_body(obj, event, now), now)
        except ApiException:
            # Events are best effort; the same facts are in status.history.
            continue


Posting = tuple[str, dict[str, Any], datetime]   # namespace, body, when


class EventSender:
    """Posts Events in the background for one client, on the running event loop: a queue, and SENDERS tasks
    that take from it. It holds its client weakly: a client no one else holds is gone, and its queue with it."""

    def __init__(self, client: KubeClient) -> None:
        self.loop = asyncio.get_running_loop()
        self._client = weakref.ref(client)
        self._waiting: asyncio.Queue[Posting] = asyncio.Queue(maxsize=WAITING_LIMIT)
        self._tasks = [self.loop.create_task(self._send()) for _ in range(SENDERS)]

    def put(self, posting: Posting) -> bool:
        """Hand one Event over; False: dropped, too many wait already."""
        try:
            self._waiting.put_nowait(posting)
        except asyncio.QueueFull:
            return False
        return True

    async def drain(self) -> None:
        """Until every Event handed over so far has been posted (or given up)."""
        await self._waiting.join()

    async def _send(self) -> None:
        while True:
            namespace, body, now = await self._waiting.get()
            try:
                client = self._client()
                if client is not None:
                    await _record(client, namespace, body, now)
            except Exception as exc:  # best effort: the same facts are in status.history
                logs.logger().warning("Event not posted", reason=body.get("reason"), error=str(exc)[:300],
                                      namespace=namespace, name=body["involvedObject"].get("name"))
            finally:
                self._waiting.task_done()


_SENDERS: weakref.WeakKeyDictionary[KubeClient, EventSender] = weakref.WeakKeyDictionary()


def event_sender(client: KubeClient) -> EventSender:
    """The client's sender on the running loop (a new one for a new loop: each test runs its own)."""
    sender = _SENDERS.get(client)
    if sender is None or sender.loop is not asyncio.get_running_loop():
        sender = _SENDERS[client] = EventSender(client)
    return sender


def submit_events(client: KubeClient, obj: dict[str, Any], events: tuple[Event, ...]) -> None:
    """Post a decision's Events in the background; returns at once. An Event that finds WAITING_LIMIT others
    waiting is dropped, with a warning in the log."""
    if not events:
        return
    namespace, now, sender = obj["metadata"]["namespace"], datetime.now(UTC), event_sender(client)
    for event in events:
        if not sender.put((namespace, event_body(obj, event, now), now)):
            logs.logger(rollout=obj["metadata"]["name"], namespace=namespace, wave=None).warning(
                "Event dropped: too many waiting to be posted", reason=event.reason, waiting=WAITING_LIMIT)
