"""Turning API objects (plain dicts) into the core's observation values."""

from __future__ import annotations

import json
from typing import Any

from guarded.api.rollout import REQUEST_ANNOTATION
from guarded.core.observations import DeploymentState, Request


def deployment_state(obj: dict[str, Any] | None) -> DeploymentState | None:
    if obj is None:
        return None
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    status = obj.get("status", {}) or {}
    owner = next((ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)
    return DeploymentState(
        name=meta["name"],
        uid=meta.get("uid"),
        owner_uid=owner.get("uid") if owner else None,
        generation=int(meta.get("generation", 1)),
        observed_generation=int(status.get("observedGeneration", 0)),
        replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        status_replicas=int(status.get("replicas", 0)),
        ready=int(status.get("readyReplicas", 0)),
        available=int(status.get("availableReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        selector=spec.get("selector", {}),
        template=spec.get("template", {}),
        annotations=meta.get("annotations", {}) or {},
        labels=meta.get("labels", {}) or {},
        deleting=meta.get("deletionTimestamp") is not None,
    )


def request_from(annotations: dict[str, str] | None) -> Request | None:
    """The manual operation asked for in the request annotation: {"id": ..., "action": ...}."""
    raw = (annotations or {}).get(REQUEST_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Request(id=str(data["id"]), action=str(data["action"]))
    except (ValueError, KeyError, TypeError) as exc:
        return Request(id=f"malformed:{raw[:40]}", action="?",
                       error=f"annotation {REQUEST_ANNOTATION} must be JSON {{\"id\": ..., \"action\": ...}}: {exc}")
