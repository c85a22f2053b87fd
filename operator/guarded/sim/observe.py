"""The API server's JSON pod and namespace lists turned into plain observations.

Separate from the API calls so that the conversion (what counts as Ready, as being deleted) is
tested on plain dicts. The simulator reads raw JSON rather than the kubernetes client's models:
deserializing hundreds of pods into model objects twice a second costs more than the whole
simulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guarded.sim.model import Observation, PodObservation


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
    )


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
