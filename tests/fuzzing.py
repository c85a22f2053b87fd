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
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
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


@dataclass(frozen=True)
class Case:
    kind: str
    fault: str          # wrong-type, missing, unknown-field, contradictory, reference, cross-namespace
    field: str          # the name a refusal or a holding condition must carry
    body: dict[str, Any]
    targets_workload: bool = False  # a GuardedRollout of the namespace's real Deployment

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
    if fault == "wrong-type":
        value = draw(st.sampled_from(WRONG_VALUES) | st.integers() | st.text(max_size=40) | st.floats())
        _set(body, path, value)
        field = _leaf(path)
    elif fault == "missing":
        _set(body, path, None, delete=True)
        field = _leaf(path)
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
    return Case(kind, fault, field, body, targets_workload=kind == "GuardedRollout")


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
