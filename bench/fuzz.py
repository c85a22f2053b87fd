"""Fuzzed input against the real API server and an operator process of its own: 1,000 objects and more.

The seeded, larger run of what tests/integration/test_fuzz_input.py does in 120 examples (generators in
tests/fuzzing.py). In one namespace with a real Deployment and a policy that asks for an approval no one
gives, it submits generated GuardedRollouts, RolloutApprovals (by bob, who wrote none of the rollouts) and
dry-run RolloutPolicies, then counts per kind: refused naming the field, refused naming none (listed),
accepted and held naming the field, accepted and not held (listed); operator crashes, tracebacks in its
log, changes of the Deployment, and the operator's reconciles per minute (its /metrics, sampled per batch).
Needs the test bed (make testbed-up) and runs under its lock: make bench-fuzz.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from hypothesis import HealthCheck, Phase, given, seed, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fuzzing import GROUP, VERSION, Case, Outcome, cases, held_message, held_rollout, names, rollout, settled, submit  # noqa: E402
from guardrails import Team  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402
from story import given as story_given  # noqa: E402
from testbed import connect  # noqa: E402
from waiting import eventually  # noqa: E402

HELD = {"Pending", "Blocked", "Failed"}
WAITING = {"Pending", "AwaitingApproval", "Blocked", "Failed"}
BATCH = 100


def reconciles(operator: OperatorProcess) -> float:
    import requests
    from prometheus_client.parser import text_string_to_metric_families
    text = requests.get(f"http://{operator.metrics_address}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "guarded_reconcile_seconds_count")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    args = parser.parse_args()

    cluster = connect()
    core = kubernetes.client.CoreV1Api(cluster.api())
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    namespace = f"fuzz-bench-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"guarded.dev/test": "true"}}})
    policy = f"fuzz-{namespace}"
    cleanup = [policy]  # cluster-scoped policies to delete at the end
    operator = OperatorProcess(cluster)
    operator.install()
    operator.start()
    started_at = datetime.now(UTC)
    try:
        custom.create_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": policy},
            "spec": {"selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                     "rules": {"requiredApprovals": 1}}})
        shop = story_given.a_shop(cluster, namespace, replicas=2)
        version = shop.deployment("shop").metadata.resource_version
        approver = Team(cluster, namespace).custom("bob")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "guardedrollouts", held_rollout())
        result = run(args, cluster, namespace, custom, approver, operator, shop, version, cleanup)
    finally:
        crashed = operator.proc is not None and operator.proc.poll() is not None
        log = operator.log_path.read_text(errors="replace")
        operator.stop()
        operator.remove_webhooks()
        for name in cleanup:
            custom.delete_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", name)
        core.delete_namespace(namespace, propagation_policy="Background")
    result["operator"] = {"crashes": int(crashed), "exit_code": operator.proc.returncode if crashed else None,
                          "tracebacks_in_log": log.count("Traceback"), "log_lines": log.count("\n"),
                          **result.pop("operator_partial")}
    result["started"] = started_at.isoformat(timespec="seconds")
    result["seed"], result["examples_asked"] = args.seed, args.examples
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "lists"}, indent=2, ensure_ascii=False))
    ok = (not result["lists"]["refused_naming_no_field"] and not result["lists"]["accepted_not_held"]
          and result["operator"]["crashes"] == 0 and result["operator"]["tracebacks_in_log"] == 0
          and result["workload_changes"] == 0)
    return 0 if ok else 1


def run(args: argparse.Namespace, cluster: Any, namespace: str, custom: Any, approver: Any,
        operator: OperatorProcess, shop: Any, version: str, cleanup: list[str]) -> dict[str, Any]:
    tried: list[tuple[Case, str, Outcome]] = []
    rates: list[float] = []
    mark = [time.monotonic(), reconciles(operator)]
    began = time.monotonic()

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases(namespace, "shop"))
    def one(case: Case) -> None:
        name = f"fz-{len(tried)}"
        tried.append((case, name, eventually(lambda: _submitted(custom, namespace, case, name, approver),
                                             timeout=30, what="the API server calling the webhook")))
        if len(tried) % BATCH == 0:
            now, count = time.monotonic(), reconciles(operator)
            rates.append((count - mark[1]) / ((now - mark[0]) / 60))
            mark[:] = [now, count]
            print(f"[fuzz] {len(tried)} tried, {rates[-1]:.0f} reconciles/min", file=sys.stderr)

    one()
    submitted_s = time.monotonic() - began
    per_kind: dict[str, Counter[str]] = defaultdict(Counter)
    lists: dict[str, list[Any]] = {"refused_naming_no_field": [], "accepted_not_held": [],
                                   "accepted_possibly_valid": []}
    rollouts: list[tuple[Case, str]] = []
    stored: list[tuple[Case, str]] = []
    for case, name, outcome in tried:
        kinds = per_kind[case.kind]
        kinds["tried"] += 1
        kinds[f"fault:{case.fault}"] += 1
        if outcome.refused:
            kinds["refused_naming_field" if outcome.names_field else "refused_naming_no_field"] += 1
            if not outcome.names_field:
                lists["refused_naming_no_field"].append({"case": case.describe(), "message": outcome.message[:400]})
        elif case.kind == "GuardedRollout":
            rollouts.append((case, name))
        elif case.invalid and case.kind == "RolloutPolicy":
            stored.append((case, f"{name}-{namespace}"[:63]))  # stored below: must hold, naming the field
        elif case.invalid:
            kinds["accepted_not_held"] += 1  # an invalid approval let through
            lists["accepted_not_held"].append({"case": case.describe(), "why": "accepted by the API server"})
        else:
            kinds["accepted_possibly_valid"] += 1

    # An invalid policy the API server lets through is stored (selecting only this namespace, as the dry run
    # did): a rollout of the namespace must then be held naming the policy and the field the operator cannot read.
    for case, name in stored:
        body = {**case.body, "metadata": {"name": name}}
        custom.create_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", body)
        cleanup.append(name)
    if stored:
        probe = rollout("shop")
        probe["metadata"]["name"] = "fz-probe"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "guardedrollouts", probe)
        status = eventually(lambda: (custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "guardedrollouts", "fz-probe").get("status") or {}).get("phase") and
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "guardedrollouts", "fz-probe")["status"],
            timeout=60, what="the probe rollout's status")
        for case, name in stored:
            message = held_message(status)
            if status.get("phase") in HELD and name in message and names(message, case.field):
                per_kind[case.kind]["accepted_held_naming_field"] += 1
            else:
                per_kind[case.kind]["accepted_not_held"] += 1
                lists["accepted_not_held"].append({"case": case.describe(), "probe": message[:400]})

    for case, status in eventually(lambda: settled(custom, namespace, rollouts), timeout=300, interval=2,
                                   what="every accepted rollout with a status"):
        kinds = per_kind[case.kind]
        phase, message = status.get("phase"), held_message(status)
        if not case.invalid:
            kinds["accepted_possibly_valid"] += 1
            if phase not in WAITING:
                lists["accepted_not_held"].append({"case": case.describe(), "phase": phase})
            elif len(lists["accepted_possibly_valid"]) < 50:
                lists["accepted_possibly_valid"].append({"case": case.describe()[:200], "phase": phase})
        elif phase in HELD and names(message, case.field):
            kinds["accepted_held_naming_field"] += 1
        else:
            kinds["accepted_not_held"] += 1
            lists["accepted_not_held"].append({"case": case.describe(), "phase": phase, "message": message[:400]})
    time.sleep(30)  # held rollouts keep being reconciled: one more interval of their rate
    now, count = time.monotonic(), reconciles(operator)
    rates.append((count - mark[1]) / ((now - mark[0]) / 60))
    changed = shop.deployment("shop").metadata.resource_version != version
    return {
        "objects_tried": len(tried),
        "per_kind": {k: dict(sorted(v.items())) for k, v in sorted(per_kind.items())},
        "refused_naming_no_field": len(lists["refused_naming_no_field"]),
        "accepted_not_held": len(lists["accepted_not_held"]),
        "workload_changes": int(changed),
        "seconds_submitting": round(submitted_s, 1),
        "operator_partial": {"reconciles_per_minute_max": round(max(rates), 1),
                             "reconciles_per_minute_per_batch": [round(r, 1) for r in rates],
                             "rollouts_in_namespace": len(rollouts) + 1, "ready_at_end": operator.ready()},
        "lists": lists,
    }


def _submitted(custom: Any, namespace: str, case: Case, name: str, approver: Any) -> Outcome | None:
    try:
        return submit(custom, namespace, case, name, approver)
    except kubernetes.client.rest.ApiException as exc:
        if "failed calling webhook" in str(exc.body):
            return None
        raise


if __name__ == "__main__":
    sys.exit(main())
