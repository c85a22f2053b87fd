"""Fuzzed input against the real API server and the running (shared) operator.

A bounded hypothesis run of GuardedRollouts, RolloutApprovals and (dry-run) RolloutPolicies, each with one
fault (tests/fuzzing.py). Each one is refused by the API server with a message naming the field, or
accepted and then held by the operator with a message or condition naming it. A policy of the test's
namespace asks for an approval no one gives, so that no rollout here may touch the workload even if it
were valid: the namespace's real Deployment must keep its resourceVersion. The operator must stay up,
log no traceback and no failed reconcile, and not loop hot (reconciles per minute from its /metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import kubernetes
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client.parser import text_string_to_metric_families

import fuzzing
from fuzzing import GROUP, VERSION, Case, Outcome, cases, held_message, held_rollout, names, submit
from guardrails import Team
from operator_process import OperatorProcess
from story import given as story_given
from testbed import Cluster
from waiting import eventually

EXAMPLES = 120
HELD = {"Pending", "Blocked", "Failed"}                 # an invalid rollout, held naming the field
WAITING = {"Pending", "AwaitingApproval", "Blocked", "Failed"}  # a possibly valid one, held by the policy
PER_ROLLOUT_PER_MINUTE = 60  # reconciles of one rollout: hot would be a loop without a pause


@pytest.fixture
def approval_policy(cluster: Cluster, namespace: str) -> Iterator[str]:
    """Every rollout of this namespace (and only of it: tests run side by side) waits for an approval."""
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    name = f"fuzz-{namespace}"[:63]
    custom.create_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": name},
        "spec": {"selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                 "rules": {"requiredApprovals": 1}}})
    yield name
    custom.delete_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", name)


def reconciles(operator: OperatorProcess) -> tuple[float, float]:
    """(reconciles so far, rollouts it drives now) from the operator's own /metrics."""
    text = requests.get(f"http://{operator.metrics_address}/metrics", timeout=5).text
    done = driven = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "guarded_reconcile_seconds_count":
                done += sample.value
            elif sample.name == "guarded_rollouts":
                driven += sample.value
    return done, driven


def test_fuzzed_objects_are_refused_or_held_naming_the_field_and_never_touch_the_workload(
        cluster: Cluster, namespace: str, operator: OperatorProcess, approval_policy: str,
        request: pytest.FixtureRequest) -> None:
    shop = story_given.a_shop(cluster, namespace, replicas=2)
    version = shop.deployment("shop").metadata.resource_version
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    # bob, an engineer of the namespace's team, may approve there and wrote none of the rollouts (admin did).
    approver = Team(cluster, namespace).custom("bob")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "guardedrollouts", held_rollout())
    log_start = operator.log_path.stat().st_size
    started, (reconciled_before, _) = time.monotonic(), reconciles(operator)
    tried: list[tuple[Case, str, Outcome]] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases(namespace, "shop"))
    def run(case: Case) -> None:
        name = f"fz-{len(tried)}"
        outcome = eventually(lambda: _submitted(custom, namespace, case, name, approver), timeout=30,
                             what="the API server calling the operator's admission webhook")
        tried.append((case, name, outcome))

    run()

    refused = [(c, o) for c, _, o in tried if o.refused]
    unnamed = [(c.describe(), o.message[:300]) for c, o in refused if not o.names_field]
    accepted = [(c, n) for c, n, o in tried if not o.refused and c.kind == "GuardedRollout"]
    accepted_invalid = [c.describe() for c, _, o in tried
                        if not o.refused and c.invalid and c.kind == "RolloutApproval"]
    # An invalid policy the API server lets through (it takes a list for a date-time string) is stored, selecting
    # only this namespace: a rollout here must then be held naming the policy and the field it cannot read.
    unreadable = [(c, n) for c, n, o in tried if not o.refused and c.invalid and c.kind == "RolloutPolicy"]
    for c, n in unreadable:
        body = {**c.body, "metadata": {"name": f"{n}-{namespace}"[:63]}}
        custom.create_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", body)
        request.addfinalizer(lambda name=body["metadata"]["name"]: custom.delete_cluster_custom_object(
            GROUP, VERSION, "rolloutpolicies", name))
    if unreadable:
        probe = fuzzing.rollout("shop")
        probe["metadata"]["name"] = "fz-probe"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "guardedrollouts", probe)
        accepted.append((unreadable[0][0], "fz-probe"))

    statuses = eventually(lambda: fuzzing.settled(custom, namespace, accepted), timeout=60, interval=1,
                          what="every accepted rollout with a status")
    not_held = [(c.describe(), s.get("phase")) for c, s in statuses
                if s.get("phase") not in (HELD if c.invalid else WAITING)]
    unnamed_held = [(c.describe(), held_message(s)[:400]) for c, s in statuses
                    if c.invalid and not names(held_message(s), c.field)]
    time.sleep(5)  # the held rollouts are reconciled a while longer: their rate below
    reconciled_after, driven = reconciles(operator)
    per_minute = (reconciled_after - reconciled_before) / max((time.monotonic() - started) / 60, 0.5)

    assert not unnamed, f"{len(unnamed)} of {len(refused)} refusals do not name the field:\n" + \
        "\n".join(map(str, unnamed[:10]))
    assert not accepted_invalid, f"invalid approvals or policies accepted: {accepted_invalid[:10]}"
    assert not not_held, f"accepted rollouts not held: {not_held[:10]}"
    assert not unnamed_held, f"{len(unnamed_held)} held invalid rollouts do not name the field:\n" + \
        "\n".join(map(str, unnamed_held[:10]))
    assert shop.deployment("shop").metadata.resource_version == version, "a fuzzed object changed the workload"
    assert operator.ready()
    log = operator.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log, "a traceback in the operator's log:\n" + log[log.find("Traceback"):][:3000]
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    failed = [e for e in lines if e.get("namespace") == namespace
              and ("failed" in str(e.get("event")) or e.get("exception"))]
    assert not failed, f"reconciles failed on fuzzed input: {failed[:3]}"
    assert per_minute <= PER_ROLLOUT_PER_MINUTE * max(driven, 1), (per_minute, driven)
    assert len(tried) >= EXAMPLES // 2 and refused and accepted, (len(tried), len(refused), len(accepted))


def _submitted(custom: kubernetes.client.CustomObjectsApi, namespace: str, case: Case, name: str,
               approver: kubernetes.client.CustomObjectsApi) -> Outcome | None:
    try:
        return submit(custom, namespace, case, name, approver)
    except kubernetes.client.rest.ApiException as exc:
        if "failed calling webhook" in str(exc.body):
            return None
        raise
