"""Fuzzed GuardedRollouts, RolloutPolicies and RolloutApprovals for the real API server and operator.

Each case is a valid object of one kind with one fault put in at one place: a wrong type, an extreme
number, a huge or unicode string, an unknown field, a missing part, a cross-namespace or missing
reference, or a valid-looking but contradictory spec. `field` is the name its refusal or its holding
condition must carry (the last key of the path the fault is at). Shared by tests/integration/test_fuzz_input.py
(a bounded hypothesis run) and bench/fuzz.py (a seeded run of 1,000 and more).

Everything is created with fieldValidation=Strict, as kubectl does: an unknown field is refused by name
instead of dropped. Policies are only dry-run (the API server validates them, nothing is stored): a stored
policy is cluster-wide, and the tests beside this one must not be governed by a fuzzed one.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import yaml
from kubernetes.client.rest import ApiException

GROUP, VERSION = "rollouts.guarded.dev", "v1alpha1"
PLURALS = {"GuardedRollout": "guardedrollouts", "RolloutPolicy": "rolloutpolicies",
           "RolloutApproval": "rolloutapprovals"}

HUGE = "x" * 100_000
APPROVED = "fz-rollout"  # the rollout fuzzed approvals name: see held_rollout()
WRONG_VALUES: list[Any] = [7, -1, 0, 2**63, -(2**63), 1e308, True, None, [], {}, "🚀ünï", HUGE, "1e999", [1, "a"],
                           {"nested": {"deep": [None]}}]


def rollout(target: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout", "metadata": {"name": "fz"},
            "spec": {"target": {"name": target}, "change": {"containers": [{"name": "app", "image": "shop:2.0.0"}]},
                     "waves": [{"replicas": 1, "bake": "5s"}, {"weight": 100, "bake": "5s"}],
                     "progressDeadline": "10m", "description": "fuzz",
                     "analysis": {"interval": "10s", "metrics": [{"name": "errors", "direction": "LowerIsBetter",
                                                                  "events": "sum(e)", "requests": "sum(r)"}]}}}


def held_rollout() -> dict[str, Any]:
    """The rollout approvals name: it exists (approvals of missing rollouts are refused at admission) and
    targets no Deployment, so that no approval could ever start anything."""
    body = rollout("absent")
    body["metadata"]["name"] = APPROVED
    return body


def policy(namespace: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": "fz"},
            "spec": {"selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                     "rules": {"requiredApprovals": 1, "firstWave": {"maxWeight": 10}, "maxConcurrent": 2,
                               "minBake": "10s"},
                     "freezeWindows": [{"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}]}}


def approval(rollout_name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutApproval", "metadata": {"name": "fz"},
            "spec": {"rollout": rollout_name, "comment": "fuzz"}}


# Where faults go: paths into each base (keys and list indexes).
PATHS: dict[str, list[tuple[Any, ...]]] = {
    "GuardedRollout": [("spec", "target"), ("spec", "target", "name"), ("spec", "change"),
                       ("spec", "change", "containers"), ("spec", "change", "containers", 0, "image"),
                       ("spec", "change", "containers", 0, "name"), ("spec", "waves"), ("spec", "waves", 0),
                       ("spec", "waves", 0, "replicas"), ("spec", "waves", 1, "weight"), ("spec", "waves", 0, "bake"),
                       ("spec", "progressDeadline"), ("spec", "description"), ("spec", "analysis"),
                       ("spec", "analysis", "interval"), ("spec", "analysis", "metrics", 0, "direction"),
                       ("spec", "analysis", "metrics", 0, "events"), ("spec", "analysis", "metrics", 0, "name")],
    "RolloutPolicy": [("spec", "rules"), ("spec", "rules", "requiredApprovals"), ("spec", "rules", "firstWave"),
                      ("spec", "rules", "firstWave", "maxWeight"), ("spec", "rules", "maxConcurrent"),
                      ("spec", "rules", "minBake"), ("spec", "freezeWindows"),
                      ("spec", "freezeWindows", 0, "start"), ("spec", "freezeWindows", 0, "end")],
    "RolloutApproval": [("spec", "rollout"), ("spec", "comment"), ("spec", "revision")],
}


CRDS = Path(__file__).resolve().parent.parent / "crds"


def _schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for kind, plural in PLURALS.items():
        crd = yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
        out[kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


SCHEMAS = _schemas()
_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                       "boolean": (bool,), "object": (dict,), "array": (list,)}


def _schema_at(kind: str, path: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The published schema of the node at `path` and of its parent (the CRD the API server enforces)."""
    node, parent = SCHEMAS[kind], SCHEMAS[kind]
    for part in path:
        parent = node
        node = node["items"] if isinstance(part, int) else node["properties"][part]
    return node, parent


def breaks_schema(node: dict[str, Any], value: Any) -> bool:
    """Whether the published schema itself forbids `value` here: an oracle that is not the operator's code.
    (Values the schema allows may still be refused or held by the operator; they need not be.)"""
    if value is None:
        return False  # a null of a field that is not nullable is pruned: as if missing (see Case.invalid)
    kind = node.get("type")
    if kind and (not isinstance(value, _TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value < node.get("minimum", value) or value > node.get("maximum", value)
    if isinstance(value, str):
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)):
            return True
        if "enum" in node and value not in node["enum"]:
            return True
        if "pattern" in node and not re.search(node["pattern"], value):
            return True
        if node.get("format") == "date-time":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return True
    if isinstance(value, list):
        return len(value) < node.get("minItems", 0)
    if isinstance(value, dict):
        return any(key not in value for key in node.get("required", []))
    return False


@dataclass(frozen=True)
class Case:
    kind: str
    fault: str          # wrong-type, missing, unknown-field, contradictory, reference, cross-namespace
    field: str          # the name a refusal or a holding condition must carry
    body: dict[str, Any]
    targets_workload: bool = False  # a GuardedRollout of the namespace's real Deployment
    # Surely invalid: the fault breaks the published schema, or is an unknown field, a contradiction or a
    # missing reference by construction. A fault the schema allows (a text description, a missing optional
    # bake) may be a valid object: it must not touch the workload (the test's policy holds it), nothing more.
    invalid: bool = True

    def describe(self) -> str:
        return f"{self.kind} {self.fault} at {self.field}: {json.dumps(self.body['spec'], default=str)[:300]}"


def _leaf(path: tuple[Any, ...]) -> str:
    return next(str(p) for p in reversed(path) if isinstance(p, str))


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any, *, delete: bool = False) -> None:
    node: Any = body
    for part in path[:-1]:
        node = node[part]
    if delete:
        if isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            del node[path[-1]]
    else:
        node[path[-1]] = value


def base(kind: str, namespace: str, workload: str) -> dict[str, Any]:
    if kind == "GuardedRollout":
        return rollout(workload)
    if kind == "RolloutPolicy":
        return policy(namespace)
    return approval(APPROVED)


def contradictions(workload: str) -> list[tuple[str, dict[str, Any]]]:
    """Specs that type-check but say two things at once; (field, spec changes)."""
    return [
        ("waves", {"waves": [{"weight": 50, "bake": "5s"}, {"weight": 10, "bake": "5s"}]}),
        ("waves", {"waves": [{"weight": 50, "replicas": 2, "bake": "5s"}]}),
        ("waves", {"waves": []}),
        ("target", {"target": {"name": f"{workload}-canary"}}),
        ("consumers", {"consumers": [{"name": workload}]}),
        ("change", {"change": {}}),
        ("containers", {"change": {"containers": [{"name": "no-such-container", "image": "shop:2"}]}}),
        ("containers", {"change": {"containers": [{"name": "app", "image": "a:1"}, {"name": "app", "image": "b:2"}]}}),
        ("trafficRouting", {"trafficRouting": {"httpRoute": {"name": "no-such-route"}}}),
    ]


@st.composite
def cases(draw: st.DrawFn, namespace: str, workload: str) -> Case:
    kind = draw(st.sampled_from(sorted(PATHS)))
    body = base(kind, namespace, workload)
    fault = draw(st.sampled_from(["wrong-type", "wrong-type", "missing", "unknown-field", "contradictory",
                                  "reference", "cross-namespace"]))
    if fault in ("contradictory", "reference", "cross-namespace") and kind != "GuardedRollout":
        if kind == "RolloutApproval" and fault == "reference":
            body["spec"]["rollout"] = draw(st.sampled_from(["absent", "a" * 63]))
            return Case(kind, fault, "rollout", body)
        fault = "wrong-type"
    path = draw(st.sampled_from(PATHS[kind]))
    invalid = True
    if fault == "wrong-type":
        # Finite floats only: NaN and infinity are not JSON, so no client can send them.
        value = draw(st.sampled_from(WRONG_VALUES) | st.integers() | st.text(max_size=40)
                     | st.floats(allow_nan=False, allow_infinity=False))
        _set(body, path, value)
        field = _leaf(path)
        node, parent = _schema_at(kind, path)
        invalid = breaks_schema(node, value) or (value is None and _required(parent, path))
    elif fault == "missing":
        _set(body, path, None, delete=True)
        field = _leaf(path)
        parent = _schema_at(kind, path)[1]
        if isinstance(path[-1], int):  # an item of a list: a fault if the list is now shorter than allowed
            invalid = len(_get(body, path[:-1])) < parent.get("minItems", 0)
        else:
            invalid = _required(parent, path)
    elif fault == "unknown-field":
        field = draw(st.sampled_from(["unknownField", "namespace", "replicaz", "ünïcode"]))
        node: Any = body
        for part in path[:-1]:
            node = node[part]
        here = node.get(path[-1]) if isinstance(node, dict) else node[path[-1]]
        holder = here if isinstance(here, dict) else node
        holder[field] = draw(st.sampled_from([1, "x", {"a": 1}]))
    elif fault == "contradictory":
        field, change = draw(st.sampled_from(contradictions(workload)))
        body["spec"].update(copy.deepcopy(change))
    elif fault == "reference":
        field, change = draw(st.sampled_from([("target", {"target": {"name": "absent"}}),
                                              ("configMaps", {"change": {"configMaps": [
                                                  {"name": "absent", "data": {"k": "v"}}]}})]))
        body["spec"].update(change)
        return Case(kind, fault, field, body)
    else:  # cross-namespace: a target in another namespace, by a field the API does not have
        body["spec"]["target"] = {"name": workload, "namespace": "kube-system"}
        field = "namespace"
    return Case(kind, fault, field, body, targets_workload=kind == "GuardedRollout", invalid=invalid)


def _required(parent: dict[str, Any], path: tuple[Any, ...]) -> bool:
    return isinstance(path[-1], str) and path[-1] in parent.get("required", [])


def _get(body: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = body
    for part in path:
        node = node[part]
    return node


@dataclass(frozen=True)
class Outcome:
    refused: bool
    reason: str        # the API server's reason (Invalid, BadRequest, ...) or "Accepted"
    message: str
    names_field: bool


def submit(custom: Any, namespace: str, case: Case, name: str, approver: Any = None) -> Outcome:
    """Create the case's object as `name` (policies: dry run; approvals with `approver`'s client, someone
    who did not write the rollout) and say what the API server answered."""
    body = copy.deepcopy(case.body)
    body["metadata"]["name"] = name
    plural = PLURALS[case.kind]
    try:
        if case.kind == "RolloutPolicy":
            custom.create_cluster_custom_object(GROUP, VERSION, plural, body, dry_run="All", field_validation="Strict")
        else:
            client = approver if case.kind == "RolloutApproval" and approver is not None else custom
            client.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body, field_validation="Strict")
    except ApiException as exc:
        if exc.status is None or exc.status >= 500:
            raise
        try:
            answer = json.loads(exc.body)
        except (TypeError, ValueError):
            answer = {"reason": str(exc.reason), "message": str(exc.body)}
        message = str(answer.get("message") or "")
        return Outcome(True, str(answer.get("reason") or exc.status), message, names(message, case.field))
    return Outcome(False, "Accepted", "", False)


def names(message: str, field: str) -> bool:
    """The message names the field: its key, as the API server's paths (spec.waves[0].bake) spell it."""
    return field.lower() in message.lower()


def held_message(status: dict[str, Any]) -> str:
    """What a held rollout says about itself: its message and its conditions' messages."""
    parts = [str(status.get("message") or "")]
    parts += [f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
              for c in status.get("conditions") or []]
    return "\n".join(parts)


def settled(custom: Any, namespace: str, accepted: list[tuple[Case, str]]) -> list[tuple[Case, dict[str, Any]]] | None:
    """Each accepted rollout's status once every one of them has a phase (None until then), for eventually()."""
    out = []
    for case, name in accepted:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "guardedrollouts", name).get("status")
        if not (status or {}).get("phase"):
            return None
        out.append((case, status))
    return out
