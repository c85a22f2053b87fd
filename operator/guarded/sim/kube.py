"""Reading the cluster: one list of pods, one of namespaces and one of HTTPRoutes per tick (and of Services,
when there is a route), and, only in namespaces where
a pod takes its numbers from a config key, one list of the ConfigMaps and/or Secrets its pods read.

Polling, not watching: a list is one request that is either complete or fails, so there is no
resync, bookmark or reconnect logic to get wrong, and at test-bed scale (hundreds of pods, a tick
of half a second) it costs the API server little. Bodies are read as raw JSON (see ``observe``).
A failed ConfigMap or Secret list fails the whole poll, like a failed pod list: the simulation keeps
its counters and retries, rather than serving a tick with the pods' configuration missing.

Listing Secrets needs a user allowed to (the test bed runs the simulator as its admin).
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes

from guarded.sim.model import CONFIG_MAP, Observation
from guarded.sim.observe import config_reads, observation, with_configs, with_routes

GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")


class ClusterReader:
    def __init__(self, kubeconfig: str | None, context: str | None, label_selector: str = "app",
                 timeout: float = 10.0) -> None:
        api = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        # Pods without an `app` label belong to no service; the API server leaves them out for us.
        self.label_selector = label_selector
        self.timeout = timeout

    def observe(self) -> Observation:
        # Typed as models, but with _preload_content=False these are raw urllib3 responses.
        pods: Any = self.core.list_pod_for_all_namespaces(
            label_selector=self.label_selector, _preload_content=False, _request_timeout=self.timeout
        )
        namespaces: Any = self.core.list_namespace(_preload_content=False, _request_timeout=self.timeout)
        obs = observation(json.loads(pods.data), json.loads(namespaces.data))
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
