"""The API server's JSON pod, namespace, ConfigMap and Secret lists turned into plain observations.

Separate from the API calls so that the conversion (what counts as Ready, as being deleted, which
ConfigMaps and Secrets a pod reads, a Secret's base64) is tested on plain dicts. The simulator reads
raw JSON rather than the kubernetes client's models: deserializing hundreds of pods into model
objects twice a second costs more than the whole simulation.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from guarded.sim.model import (
    CONFIG_KEY,
    CONFIG_MAP,
    SECRET,
    ConfigObjectKey,
    ConfigRef,
    Observation,
    PodObservation,
    simulated,
)
from guarded.sim.routes import route_observation


def is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_observation(pod: Mapping[str, Any]) -> PodObservation:
    meta = pod.get("metadata") or {}
    return PodObservation(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        app=(meta.get("labels") or {}).get("app", ""),
        ready=is_ready(pod),
        deleting=meta.get("deletionTimestamp") is not None,
        annotations=dict(meta.get("annotations") or {}),
        config_refs=config_refs(pod.get("spec") or {}),
        labels=dict(meta.get("labels") or {}),
    )


def _volume_refs(volume: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    refs = [(CONFIG_MAP, (volume.get("configMap") or {}).get("name")),
            (SECRET, (volume.get("secret") or {}).get("secretName"))]
    for source in (volume.get("projected") or {}).get("sources") or []:
        refs += [(CONFIG_MAP, (source.get("configMap") or {}).get("name")),
                 (SECRET, (source.get("secret") or {}).get("name"))]
    return refs


def config_refs(spec: Mapping[str, Any]) -> tuple[ConfigRef, ...]:
    """The ConfigMaps and Secrets a pod spec reads, in the order a config key is looked up in them:
    volumes (projected ones' sources included), then each container's envFrom; each once."""
    refs: list[tuple[str, str | None]] = [ref for v in spec.get("volumes") or [] for ref in _volume_refs(v)]
    for container in spec.get("containers") or []:
        for source in container.get("envFrom") or []:
            refs += [(CONFIG_MAP, (source.get("configMapRef") or {}).get("name")),
                     (SECRET, (source.get("secretRef") or {}).get("name"))]
    return tuple(dict.fromkeys((kind, name) for kind, name in refs if name))


def observation(pod_list: Mapping[str, Any], namespace_list: Mapping[str, Any]) -> Observation:
    """From the bodies of a PodList and a NamespaceList."""
    namespaces = {
        (ns.get("metadata") or {}).get("name", ""): dict((ns.get("metadata") or {}).get("annotations") or {})
        for ns in namespace_list.get("items") or []
    }
    return Observation(
        pods=tuple(pod_observation(p) for p in pod_list.get("items") or []),
        namespace_annotations=namespaces,
    )


def with_routes(obs: Observation, route_list: Mapping[str, Any], service_list: Mapping[str, Any]) -> Observation:
    """The HTTPRoutes (from an HTTPRouteList body) and every Service's selector (from a ServiceList body)."""
    selectors = {((s.get("metadata") or {}).get("namespace", ""), (s.get("metadata") or {}).get("name", "")):
                 dict((s.get("spec") or {}).get("selector") or {}) for s in service_list.get("items") or []}
    routes = tuple(route_observation(r) for r in route_list.get("items") or [])
    return replace(obs, routes=routes, service_selectors=selectors)


def config_reads(obs: Observation) -> list[tuple[str, str]]:
    """The (namespace, kind) lists a poll needs: those that a live opted-in pod with a config key
    references; none if no pod has one."""
    opted_in = (p for p in obs.pods if simulated(p) and p.annotations.get(CONFIG_KEY, "").strip())
    return sorted({(p.namespace, kind) for p in opted_in for kind, _ in p.config_refs})


def _decode(value: str) -> str:
    """A Secret's (or binaryData's) base64 value as text ("", which is no mapping, if it is not base64)."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return ""


def config_data(lists: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[ConfigObjectKey, dict[str, str]]:
    """(namespace, kind, name) -> text of each key, from (kind, body of a ConfigMapList or SecretList) pairs."""
    data: dict[ConfigObjectKey, dict[str, str]] = {}
    for kind, body in lists:
        for item in body.get("items") or []:
            meta = item.get("metadata") or {}
            text = {k: _decode(v) for k, v in (item.get("binaryData") or {}).items()}
            plain = item.get("data") or {}
            text.update({k: _decode(v) for k, v in plain.items()} if kind == SECRET else plain)
            data[(meta.get("namespace", ""), kind, meta.get("name", ""))] = text
    return data


def with_configs(obs: Observation, lists: Iterable[tuple[str, Mapping[str, Any]]]) -> Observation:
    return replace(obs, config_data=config_data(lists))
