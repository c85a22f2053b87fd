"""Generates the CustomResourceDefinitions in crds/ from the pydantic models.

    python -m guarded.api.crdgen crds/        write the files
    python -m guarded.api.crdgen --check crds/  exit 1 if a checked-in file differs

Pydantic emits JSON Schema; a CRD needs a *structural* OpenAPI v3 schema: no $ref, no anyOf with
null, no additionalProperties next to properties, every node typed. This module does that
translation and nothing else.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from guarded.api import policy, rollout
from guarded.api.common import GROUP, VERSION

_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            merged = {**_resolve(branches[0], defs), **rest}
            if merged.get("default", 0) is None:
                merged.pop("default")
            return _resolve(merged, defs)
        raise ValueError(f"a CRD schema cannot express anyOf {node['anyOf']}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _resolve(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 numbers -> OpenAPI v3.0 booleans next to minimum/maximum
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    # Free-form maps: either string maps or anything (preserve unknown fields).
    if out.get("type") == "object" and "properties" not in out:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") == "string":
            out["additionalProperties"] = {"type": "string"}
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    # Defaults: keep scalars only; lists and objects default in the models.
    if isinstance(out.get("default"), (list, dict)):
        out.pop("default")
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}))


def _without_rules(node: Any) -> Any:
    """The schema without its CEL rules. A status is written by the operator alone: rules there could
    only refuse its writes (and, under its unbounded lists, strain the API server's CEL cost budget)."""
    if isinstance(node, list):
        return [_without_rules(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: _without_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}


def _crd(*, kind: str, plural: str, short_names: list[str], scope: str, description: str,
         spec: type[BaseModel], status: type[BaseModel] | None, columns: list[dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": structural_schema(spec),
    }
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if status is not None:
        properties["status"] = _without_rules(structural_schema(status))
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [
        *columns, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    version["schema"] = {"openAPIV3Schema": {
        "type": "object", "description": description, "required": ["spec"], "properties": properties}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short_names, "categories": ["guarded"]},
            "scope": scope,
            "versions": [version],
        },
    }


def guarded_rollout_crd() -> dict[str, Any]:
    return _crd(
        kind=rollout.KIND, plural=rollout.PLURAL, short_names=rollout.SHORT_NAMES, scope="Namespaced",
        description="One change to one workload, moved out in guarded waves.",
        spec=rollout.GuardedRolloutSpec, status=rollout.GuardedRolloutStatus,
        columns=[
            {"name": "Target", "type": "string", "jsonPath": ".spec.target.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Wave", "type": "string", "jsonPath": ".status.waveProgress"},
            {"name": "Canary", "type": "string", "jsonPath": ".status.canaryWeight",
             "description": "Canary share of ready pods, percent"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 0},
        ],
    )


def rollout_policy_crd() -> dict[str, Any]:
    return _crd(
        kind=policy.POLICY_KIND, plural=policy.POLICY_PLURAL, short_names=policy.POLICY_SHORT_NAMES,
        scope="Cluster", description="Guardrails for the GuardedRollouts it selects; the strictest rule wins.",
        spec=policy.RolloutPolicySpec, status=None,
        columns=[
            {"name": "Approvals", "type": "integer", "jsonPath": ".spec.rules.requiredApprovals"},
            {"name": "MaxConcurrent", "type": "integer", "jsonPath": ".spec.rules.maxConcurrent"},
        ],
    )


def rollout_approval_crd() -> dict[str, Any]:
    return _crd(
        kind=policy.APPROVAL_KIND, plural=policy.APPROVAL_PLURAL, short_names=policy.APPROVAL_SHORT_NAMES,
        scope="Namespaced", description="One authenticated person's approval of one GuardedRollout revision.",
        spec=policy.RolloutApprovalSpec, status=None,
        columns=[
            {"name": "Rollout", "type": "string", "jsonPath": ".spec.rollout"},
            {"name": "Revision", "type": "integer", "jsonPath": ".spec.revision"},
            {"name": "Approver", "type": "string", "jsonPath": ".spec.approver"},
        ],
    )


CRDS = {
    "guardedrollouts.yaml": guarded_rollout_crd,
    "rolloutpolicies.yaml": rollout_policy_crd,
    "rolloutapprovals.yaml": rollout_approval_crd,
}


def render() -> dict[str, str]:
    header = "# Generated by `python -m guarded.api.crdgen crds/` from operator/guarded/api. Do not edit.\n"
    return {name: header + yaml.safe_dump(build(), sort_keys=False, width=120) for name, build in CRDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the files differ from the models")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.directory / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date, run `make crds`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
