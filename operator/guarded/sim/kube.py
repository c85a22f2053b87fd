"""Reading the cluster: the pods and namespaces from a watch each (a list, then the changes), and per tick one
list of HTTPRoutes (and of Services, when there is a route) and, only in namespaces where a pod takes its
numbers from a config key, one list of the ConfigMaps and/or Secrets its pods read.

The pods and namespaces were polled too, a list per tick, until a thousand namespaces (bench/scale, issue 11)
made that two lists of 3,000 pods a second: megabytes of JSON for the API server to encode and for this
process to decode, the test bed's largest cost. A watch sends only what changed. Its failure modes are
kept simple: any error or expired resourceVersion relists from scratch, and while a relist fails the pods
are not known (a tick fails, as a failed poll did: the simulation keeps its counters and retries). Bodies
are read as raw JSON (see ``observe``).
A failed ConfigMap or Secret list fails the whole poll, like a failed pod list: the simulation keeps
its counters and retries, rather than serving a tick with the pods' configuration missing.

Listing Secrets needs a user allowed to (the test bed runs the simulator as its admin).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import kubernetes
import kubernetes.watch

from guarded.sim.model import CONFIG_MAP, Observation
from guarded.sim.observe import config_reads, observation, with_configs, with_routes

GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")


def _kept(obj: dict[str, Any]) -> dict[str, Any]:
    """What ``observe`` reads of a pod or namespace (metadata without managedFields, the spec's volumes and
    containers' envFrom, the status' conditions): the rest is not held for every pod."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    spec = obj.get("spec") or {}
    kept: dict[str, Any] = {"metadata": meta}
    if "volumes" in spec or "containers" in spec:
        kept["spec"] = {"volumes": spec.get("volumes") or [],
                        "containers": [{"envFrom": c.get("envFrom") or []} for c in spec.get("containers") or []]}
    if isinstance(obj.get("status"), dict) and "conditions" in obj["status"]:
        kept["status"] = {"conditions": obj["status"]["conditions"]}
    return kept


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class Informer:
    """One kind's objects: listed, then kept by a watch from the list's resourceVersion; any error or expired
    version relists. ``items`` raises while no list has succeeded since the last failed one."""

    def __init__(self, what: str, list_call: Callable[..., Any], timeout: float, **selector: str) -> None:
        self.what, self._call, self._timeout, self._selector = what, list_call, timeout, selector
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._synced, self._error = False, "not listed yet"
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{what}", daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def items(self) -> dict[str, Any]:
        """The objects as a list body, in the API server's order (namespace, name)."""
        with self._lock:
            if not self._synced:
                raise RuntimeError(f"{self.what}: {self._error}")
            return {"items": [self._items[k] for k in sorted(self._items)]}

    def _raw(self, **kwargs: Any) -> Any:
        # No docstring, so the watch leaves each event's object as JSON instead of building the client's models.
        return self._call(**kwargs)

    def relist(self) -> str:
        """List afresh (the watch then goes on from the version returned)."""
        body = json.loads(self._call(_preload_content=False, _request_timeout=self._timeout, **self._selector).data)
        with self._lock:
            self._items = {_key(o): _kept(o) for o in body.get("items") or []}
            self._synced = True
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> None:
        """Apply the changes from `version` on, until an error (then return, to relist) or stop."""
        while not self._stop.is_set():
            stream = kubernetes.watch.Watch().stream(
                self._raw, resource_version=version, timeout_seconds=60, allow_watch_bookmarks=True,
                _request_timeout=(self._timeout, 90), **self._selector)
            for event in stream:
                obj, kind = event["raw_object"], event["type"]
                if kind == "ERROR":  # 410 Gone: the version is too old to watch from
                    return
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                with self._lock:
                    if kind == "DELETED":
                        self._items.pop(_key(obj), None)
                    else:
                        self._items[_key(obj)] = _kept(obj)
                if self._stop.is_set():
                    return

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch(self.relist())
            except Exception as exc:  # the API server restarting, a cut: relist (items fail until it works)
                with self._lock:
                    self._synced, self._error = False, f"list or watch failed: {exc}"
                logging.getLogger(__name__).debug("%s: relisting after %s", self.what, exc)
                self._stop.wait(0.5)


class ClusterReader:
    def __init__(self, kubeconfig: str | None, context: str | None, label_selector: str = "app",
                 timeout: float = 10.0) -> None:
        api = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        # Pods without an `app` label belong to no service; the API server leaves them out for us.
        self.label_selector = label_selector
        self.timeout = timeout
        self.pods = Informer("pods", self.core.list_pod_for_all_namespaces, timeout,
                             label_selector=label_selector).start()
        self.namespaces = Informer("namespaces", self.core.list_namespace, timeout).start()

    def close(self) -> None:
        self.pods.stop()
        self.namespaces.stop()

    def observe(self) -> Observation:
        obs = observation(self.pods.items(), self.namespaces.items())
        routes = self._routes()
        if routes.get("items"):
            services: Any = self.core.list_service_for_all_namespaces(_preload_content=False,
                                                                      _request_timeout=self.timeout)
            obs = with_routes(obs, routes, json.loads(services.data))
        reads = config_reads(obs)
        if not reads:
            return obs
        return with_configs(obs, [(kind, self._list(namespace, kind)) for namespace, kind in reads])

    def _routes(self) -> dict[str, Any]:
        """Every HTTPRoute (an empty list where the Gateway API's CRDs are not installed)."""
        try:
            body: Any = self.custom.list_cluster_custom_object(*GATEWAY, _preload_content=False,
                                                              _request_timeout=self.timeout)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return dict(json.loads(body.data))

    def _list(self, namespace: str, kind: str) -> dict[str, Any]:
        """The raw ConfigMapList or SecretList of one namespace."""
        call = self.core.list_namespaced_config_map if kind == CONFIG_MAP else self.core.list_namespaced_secret
        body: Any = call(namespace, _preload_content=False, _request_timeout=self.timeout)
        return dict(json.loads(body.data))
