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
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes
from kubernetes.client.rest import ApiException

from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import PLURAL

REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="guarded-io")


# Told of every request this client sends, as (verb, resource): the operator counts them (handlers/telemetry).
RequestObserver = Callable[[str, str], None]


async def run_blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call (the Kubernetes client, a Prometheus query) on the operator's own threads.

    In the caller's context (contextvars), so that what the call counts is counted for the reconcile
    that made it."""
    call = functools.partial(contextvars.copy_context().run, functools.partial(fn, *args, **kwargs))
    return await asyncio.get_running_loop().run_in_executor(_POOL, call)


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def classify(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request as the API server's own metrics name them: get, list, watch, create,
    update, patch, delete, deletecollection; a subresource as `resource/sub` (guardedrollouts/status)."""
    parsed = urlsplit(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return method.lower(), parsed.path or "/"
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource: /namespaces/<ns>/<resource>[/<name>[/<sub>]]
    if not rest:
        return method.lower(), "/".join(parts[:3])
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    named = len(rest) >= 2
    if method == "GET":
        watch = parse_qs(parsed.query).get("watch", [""])[0] in ("true", "1")
        return ("get" if named else "watch" if watch else "list"), resource
    if method == "DELETE":
        return ("delete" if named else "deletecollection"), resource
    return _VERBS.get(method, method.lower()), resource


class Conflict(Exception):
    """The object changed since it was read (HTTP 409); re-read and decide again."""


class KubeClient:
    def __init__(self, api_client: kubernetes.client.ApiClient, *, observer: RequestObserver | None = None) -> None:
        self.api_client = api_client
        if observer is not None:  # every request passes its REST client's request(method, url, ...)
            rest = api_client.rest_client
            send = rest.request

            def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                observer(*classify(method, url))
                return send(method, url, *args, **kwargs)

            rest.request = counted
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    @staticmethod
    async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        # A call never waits forever: a stuck connection fails, and the reconcile is retried.
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return await run_blocking(fn, *args, **kwargs)

    async def _get_json(self, fn: Any, *args: Any) -> dict[str, Any] | None:
        try:
            resp = await self._call(fn, *args, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    async def _items(self, fn: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        resp = await self._call(fn, *args, _preload_content=False, **kwargs)
        return list(json.loads(resp.data).get("items", []))

    async def _replace(self, fn: Any, *args: Any) -> Any:
        """A write of an object as read: its resourceVersion guards it, and a 409 raises Conflict."""
        try:
            return await self._call(fn, *args)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            raise

    # -- GuardedRollouts -------------------------------------------------------------------
    async def get_rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_json(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)

    async def replace_rollout_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return await self._replace(self.custom.replace_namespaced_custom_object_status, GROUP, VERSION,
                                   meta["namespace"], PLURAL, meta["name"], body)

    # -- Deployments -----------------------------------------------------------------------
    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_json(self.apps.read_namespaced_deployment, name, namespace)

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call(self.apps.create_namespaced_deployment, namespace, body)

    async def replace_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        await self._replace(self.apps.replace_namespaced_deployment, body["metadata"]["name"], namespace, body)

    async def delete_deployment(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete exactly the Deployment with this uid (a precondition: a same-named other object stays).

        Foreground: the Deployment stays (marked deleting) until its pods are gone, so "canary
        absent" really means no canary pod serves any more."""
        try:
            await self._call(self.apps.delete_namespaced_deployment, name, namespace,
                             propagation_policy="Foreground", grace_period_seconds=0,
                             body=kubernetes.client.V1DeleteOptions(
                                 preconditions=kubernetes.client.V1Preconditions(uid=uid),
                                 propagation_policy="Foreground", grace_period_seconds=0))
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"Deployment {name} is no longer the object with uid {uid}") from exc
            if exc.status != 404:
                raise

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
                    return str(json.loads(exc.body).get("message") or exc.reason)
                except (ValueError, TypeError):
                    return str(exc.reason)
            raise
        return None
