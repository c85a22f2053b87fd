"""The one place the operator calls the Kubernetes API.

The official client is synchronous; every call here runs in a worker thread so kopf's event loop
never blocks. The threads are a pool of the operator's own (`run_blocking`), not the event loop's
default executor: that one also runs other libraries' blocking work (aiohttp's DNS lookups for a
notification sink, say), and a lookup that hangs there must not hold a reconcile, let alone a
rollback. Keeping all calls behind this small class is deliberate: the choice (threads vs. an async
client) is to be measured with 1,000 concurrent rollouts, and only this module would change.
Objects come back as plain dicts with the API's camelCase keys, which is what the observation
builders and the pure core expect.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes
import orjson
from kubernetes.client.rest import ApiException

from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import PLURAL
from guarded.kube.cache import WatchCache
from guarded.kube.rest import APPS, CORE, METADATA_ONLY, Resources, Rest
from guarded.kube.versions import Versions

REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
IO_THREADS = max(1, int(os.environ.get("GUARDED_IO_THREADS", "16")))  # Kubernetes calls in flight at once
_POOL = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="guarded-io")
# Analysis (Prometheus queries, and a step waiting for a query another step shares: metrics/shared.py) runs on
# threads of its own: at N = 335, steps waiting there held the pool above, and a status write or a scale waited
# behind them (reconcile p99 2.5 s, issue 11).
QUERY_THREADS = max(1, int(os.environ.get("GUARDED_QUERY_THREADS", "16")))  # analysis steps under way at once
_QUERY_POOL = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="guarded-query")


# Told of every request this client sends, as (verb, resource): the operator counts them (handlers/telemetry).
RequestObserver = Callable[[str, str], None]


async def run_blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call of the Kubernetes client on the operator's own threads.

    In the caller's context (contextvars), so that what the call counts is counted for the reconcile
    that made it."""
    return await _run_in(_POOL, fn, args, kwargs)


async def run_query(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking analysis work (Prometheus queries) on its own threads, in the caller's context."""
    return await _run_in(_QUERY_POOL, fn, args, kwargs)


async def _run_in(pool: ThreadPoolExecutor, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = functools.partial(contextvars.copy_context().run, functools.partial(fn, *args, **kwargs))
    return await asyncio.get_running_loop().run_in_executor(pool, call)


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}
_WRITES = frozenset({"create", "update", "patch", "delete"})


def target_of(method: str, url: str) -> tuple[str, str, str, str]:
    """(verb, resource, namespace, name) of a request, verb and resource as the API server's own metrics name
    them: get, list, watch, create, update, patch, delete, deletecollection; a subresource as `resource/sub`
    (guardedrollouts/status). Namespace and name are "" where the request has none."""
    parsed = urlsplit(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return method.lower(), parsed.path or "/", "", ""
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]  # a namespaced resource: /namespaces/<ns>/<resource>[/<name>[/<sub>]]
    if not rest:
        return method.lower(), "/".join(parts[:3]), "", ""
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    name = rest[1] if len(rest) >= 2 else ""
    if method == "GET":
        watch = parse_qs(parsed.query).get("watch", [""])[0] in ("true", "1")
        return ("get" if name else "watch" if watch else "list"), resource, namespace, name
    if method == "DELETE":
        return ("delete" if name else "deletecollection"), resource, namespace, name
    return _VERBS.get(method, method.lower()), resource, namespace, name


def classify(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request (see target_of)."""
    return target_of(method, url)[:2]


class Conflict(Exception):
    """The object changed since it was read (HTTP 409); re-read and decide again."""


class KubeClient:
    def __init__(self, api_client: kubernetes.client.ApiClient, *, observer: RequestObserver | None = None,
                 cache: WatchCache | None = None, versions: Versions | None = None) -> None:
        self.api_client = api_client
        self.cache = cache
        self.versions = versions   # every rollout's version in the API server's order (kube/versions), if followed
        rest = Rest(api_client)
        send = rest.send
        if observer is not None or cache is not None:  # every request is told of before it is sent

            def telling(fn: Any) -> Any:
                def sent(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                    verb, resource, namespace, name = target_of(method, url)
                    if observer is not None:
                        observer(verb, resource)
                    if cache is not None and name and verb in _WRITES:  # before it is sent: no read may trust
                        cache.touched(resource.split("/")[0], namespace, name)  # the copy the write replaces
                    return fn(method, url, *args, **kwargs)
                return sent

            send = telling(rest.send)
            # What still goes through the client's generated classes on this api_client is told of too.
            api_client.rest_client.request = telling(api_client.rest_client.request)
        # The generated classes' methods the operator calls, without them (kube/rest.py).
        self.core = Resources(rest, "/api/v1", CORE, send=send)
        self.apps = Resources(rest, "/apis/apps/v1", APPS, send=send)
        self.custom = Resources(rest, send=send)

    @staticmethod
    async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        # A call never waits forever: a stuck connection fails, and the reconcile is retried.
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return await run_blocking(fn, *args, **kwargs)

    async def _get_json(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            resp = await self._call(fn, *args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return orjson.loads(resp.data)

    async def _items(self, fn: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        resp = await self._call(fn, *args, _preload_content=False, **kwargs)
        return list(orjson.loads(resp.data).get("items", []))

    async def _replace(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A write of an object as read: its resourceVersion guards it, and a 409 raises Conflict."""
        try:
            return await self._call(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            raise

    # -- GuardedRollouts -------------------------------------------------------------------
    async def get_rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)

    async def rollout_version(self, namespace: str, name: str) -> str | None:
        """The rollout's resourceVersion as the API server has it now (None: it is gone), read as its metadata
        only: the split-brain fence asks before each action, and status is most of a rollout's bytes."""
        meta = await self._get_json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                    name, _headers={"Accept": METADATA_ONLY})
        return None if meta is None else (meta.get("metadata") or {}).get("resourceVersion")

    async def observed_rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The rollout as the watch saw it, or as the API server has it where the watch cannot be trusted."""
        return await self._observed(PLURAL, namespace, name, self.get_rollout)

    async def patch_rollout_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of .status; a metadata.resourceVersion in it guards it (a 409 raises Conflict)."""
        sent_at = time.monotonic()
        try:
            resp = await self._replace(self.custom.patch_namespaced_custom_object_status, GROUP, VERSION,
                                       namespace, PLURAL, name, patch, _preload_content=False)
        except Conflict:
            self.distrust(PLURAL, namespace, name)
            raise
        result = orjson.loads(resp.data)   # the whole rollout: decoded here, not by the client's models
        self._wrote(PLURAL, namespace, name, result, sent_at, (patch.get("metadata") or {}).get("resourceVersion"))
        return dict(result)

    async def replace_rollout_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        sent_at = time.monotonic()
        resp = await self._replace(self.custom.replace_namespaced_custom_object_status, GROUP, VERSION,
                                   meta["namespace"], PLURAL, meta["name"], body, _preload_content=False)
        result = orjson.loads(resp.data)
        self._wrote(PLURAL, meta["namespace"], meta["name"], result, sent_at, meta.get("resourceVersion"))
        return dict(result)

    # -- the watch cache -----------------------------------------------------------------------
    async def _observed(self, resource: str, namespace: str, name: str, get: Any) -> dict[str, Any] | None:
        if self.cache is not None:
            trusted, obj = self.cache.read(resource, namespace, name)
            if trusted:
                return obj
        fresh: dict[str, Any] | None = await get(namespace, name)
        if self.cache is not None:
            self.cache.settle(resource, namespace, name, fresh)
        return fresh

    async def observed_list(self, resource: str, namespace: str, list_fresh: Any) -> list[dict[str, Any]]:
        """A namespace's objects of a kind ("" for a cluster-scoped kind) as the watch saw them, or as the API
        server lists them where the watch cannot be trusted."""
        if self.cache is not None:
            trusted, items = self.cache.read_list(resource, namespace)
            if trusted:
                return items
        fresh: list[dict[str, Any]] = await list_fresh()
        if self.cache is not None:
            self.cache.settle_list(resource, namespace, fresh)
        return fresh

    def distrust(self, resource: str, namespace: str, name: str) -> None:
        """The cache's copy of this object is behind (a write conflicted on it): read it afresh next time."""
        if self.cache is not None:
            self.cache.touched(resource, namespace, name)

    def _wrote(self, resource: str, namespace: str, name: str, result: Any, sent_at: float | None = None,
               guard: str | None = None) -> None:
        """After a write: the resourceVersion it produced, and the object it returned when that is JSON. A
        rollout's status write, sent at `sent_at` (monotonic) on the condition of version `guard`, marks the
        version watch (kube/versions) when it made a newer version: a write the API server found changed
        nothing answers the old one, which proves nothing of when the watch caught up."""
        meta = (result or {}).get("metadata") if isinstance(result, dict) else getattr(result, "metadata", None)
        version = (meta.get("resourceVersion") if isinstance(meta, dict)
                   else getattr(meta, "resource_version", None)) if meta is not None else None
        if self.versions is not None and sent_at is not None and version and guard:
            self.versions.wrote(version, sent_at, after=guard)
        if self.cache is not None:
            self.cache.wrote(resource, namespace, name, version or "", result if isinstance(result, dict) else None)

    # -- Deployments -----------------------------------------------------------------------
    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_json(self.apps.read_namespaced_deployment, name, namespace)

    async def observed_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment as the watch saw it, or as the API server has it where the watch cannot be trusted."""
        return await self._observed("deployments", namespace, name, self.get_deployment)

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        self.distrust("deployments", namespace, name)  # a POST names no object: the REST hook cannot mark it
        resp = await self._call(self.apps.create_namespaced_deployment, namespace, body, _preload_content=False)
        self._wrote("deployments", namespace, name, orjson.loads(resp.data))

    async def replace_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        resp = await self._replace(self.apps.replace_namespaced_deployment, name, namespace, body,
                                   _preload_content=False)  # JSON, not the client's models: less CPU
        self._wrote("deployments", namespace, name, orjson.loads(resp.data))

    async def delete_deployment(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete exactly the Deployment with this uid (a precondition: a same-named other object stays).

        Foreground: the Deployment stays (marked deleting) until its pods are gone, so "canary
        absent" really means no canary pod serves any more."""
        try:
            resp = await self._call(self.apps.delete_namespaced_deployment, name, namespace,
                                    propagation_policy="Foreground", grace_period_seconds=0,
                                    body={"preconditions": {"uid": uid}, "propagationPolicy": "Foreground",
                                          "gracePeriodSeconds": 0},
                                    _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"Deployment {name} is no longer the object with uid {uid}") from exc
            if exc.status != 404:
                raise
            return
        # Foreground: the answer is the Deployment marked deleting (its pods go first); read as such meanwhile.
        answer = orjson.loads(resp.data or b"{}")
        if answer.get("kind") == "Deployment":
            self._wrote("deployments", namespace, name, answer)

    # -- what the pre-flight gates read ------------------------------------------------------
    async def list_cluster_custom(self, plural: str) -> list[dict[str, Any]]:
        return await self._items(self.custom.list_cluster_custom_object, GROUP, VERSION, plural)

    async def list_namespaced_custom(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        return await self._items(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural)

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return await self._get_json(self.core.read_namespace, name)

    async def list_services(self, namespace: str) -> list[dict[str, Any]]:
        return await self._items(self.core.list_namespaced_service, namespace)

    async def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        return await self._items(self.core.list_namespaced_pod, namespace, label_selector=label_selector)

    async def dry_run_create_deployment(self, namespace: str, body: dict[str, Any]) -> str | None:
        """Ask the API server (validation and admission) whether it would accept this Deployment; None: yes."""
        try:
            await self._call(self.apps.create_namespaced_deployment, namespace, body, dry_run="All")
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                try:
                    return str(orjson.loads(exc.body).get("message") or exc.reason)
                except (ValueError, TypeError):
                    return str(exc.reason)
            raise
        return None
