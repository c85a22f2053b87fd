"""Pure builders of the pod templates and Deployments the engine asks for.

The canary is a second Deployment, `<target>-canary`, whose pods carry the target's selector
labels (so the target's Service sends them their share of traffic) plus a role label that keeps
the two Deployments' selectors apart.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import Change

ROLE_LABEL = f"{GROUP}/role"
ROLLOUT_LABEL = f"{GROUP}/rollout"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "guarded-rollouts"
REVISION_ANNOTATION = f"{GROUP}/revision"
# On a target Deployment: the one GuardedRollout that may act on it now, "<name>/<uid>".
CLAIM_ANNOTATION = f"{GROUP}/held-by"


def claim_value(rollout_name: str, rollout_uid: str) -> str:
    return f"{rollout_name}/{rollout_uid}"


def parse_claim(value: str | None) -> tuple[str, str] | None:
    """(name, uid) of a claim annotation; None when absent or not of the form name/uid."""
    if not value or "/" not in value:
        return None
    name, _, uid = value.rpartition("/")
    return (name, uid) if name and uid else None

# Lists of a pod template that a strategic-merge patch merges element-wise, and by which key.
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
    "tolerations": "key", "hostAliases": "ip",
}


def content_hash(value: Any) -> str:
    """A short, stable hash of JSON-like data (key order does not matter)."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Merge `patch` into `base` the way kubectl's strategic merge does for pod templates.

    Maps merge recursively and a null deletes; the lists named in _MERGE_KEYS merge element by
    element on their key; other lists are replaced.
    """
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in _MERGE_KEYS:
        merge_key = _MERGE_KEYS[key]
        out_list = copy.deepcopy(base)
        index = {item.get(merge_key): i for i, item in enumerate(out_list) if isinstance(item, dict)}
        for item in patch:
            if isinstance(item, dict) and item.get(merge_key) in index:
                pos = index[item[merge_key]]
                out_list[pos] = strategic_merge(out_list[pos], item, None)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


class ChangeError(ValueError):
    """The change cannot apply to this target (names the field)."""


def changed_template(target_template: dict[str, Any], change: Change, revision: str) -> dict[str, Any]:
    """The target's pod template with the change applied: what the canary runs and the target gets at promotion."""
    template = copy.deepcopy(change.template if change.template is not None else target_template)
    target_labels = (target_template.get("metadata") or {}).get("labels") or {}
    new_labels = (template.get("metadata") or {}).get("labels") or {}
    if change.template is not None and any(new_labels.get(k) != v for k, v in target_labels.items()):
        # The target's selector must keep selecting its pods (the API server refuses a selector change).
        raise ChangeError("spec.change.template.metadata.labels: a whole template must keep the target's pod "
                          f"labels {dict(sorted(target_labels.items()))}")
    containers = template.get("spec", {}).get("containers", [])
    by_name = {c.get("name"): c for c in containers}
    for i, cc in enumerate(change.containers):
        if cc.name not in by_name:
            known = ", ".join(sorted(str(n) for n in by_name)) or "none"
            raise ChangeError(
                f"spec.change.containers[{i}].name: no container {cc.name!r} in the target's pod template "
                f"(containers: {known})"
            )
        container = by_name[cc.name]
        if cc.image is not None:
            container["image"] = cc.image
        if cc.env:
            env = container.setdefault("env", [])
            positions = {e.get("name"): j for j, e in enumerate(env)}
            for var in cc.env:
                entry = {"name": var.name, "value": var.value}
                if var.name in positions:
                    env[positions[var.name]] = entry
                else:
                    env.append(entry)
    if change.pod_template_patch:
        template = strategic_merge(template, change.pod_template_patch)
    meta = template.setdefault("metadata", {})
    meta.setdefault("annotations", {})[REVISION_ANNOTATION] = revision
    return template


def canary_name(target: str) -> str:
    return f"{target}-canary"


def canary_deployment(*, rollout_name: str, rollout_uid: str | None, namespace: str, target_name: str,
                      target_selector: dict[str, Any], template: dict[str, Any], replicas: int,
                      revision: str) -> dict[str, Any]:
    """The canary Deployment: the changed template, the target's selector plus the canary role."""
    pod_template = copy.deepcopy(template)
    labels = pod_template.setdefault("metadata", {}).setdefault("labels", {})
    labels[ROLE_LABEL] = "canary"
    labels[ROLLOUT_LABEL] = rollout_name
    selector = copy.deepcopy(target_selector)
    selector.setdefault("matchLabels", {})[ROLE_LABEL] = "canary"
    metadata: dict[str, Any] = {
        "name": canary_name(target_name),
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: rollout_name, ROLE_LABEL: "canary"},
        "annotations": {REVISION_ANNOTATION: revision},
    }
    if rollout_uid:
        metadata["ownerReferences"] = [{
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout", "name": rollout_name,
            "uid": rollout_uid, "controller": True, "blockOwnerDeletion": False,
        }]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": selector,
            "template": pod_template,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        },
    }
