"""bench/detection: how fast a bad release is caught, and how many orders that saves.

For each bad-release scenario, on the local test bed with the traffic simulator and real Prometheus:

* guarded: a GuardedRollout with the default waves and analysis; measured from the moment the bad
  canary pod is Ready (the canary Deployment's first Ready pod, polled) to the
  moment rollback is complete (status RolledBack), and the orders its canary pods lost
  (expected orders at the baseline ratio minus actual orders, on the canary pods only);
* unguarded: the same change as a plain rolling update of the Deployment; orders lost over a fixed
  horizon after the first bad pod is Ready, and the rate at which it keeps losing them.

Run with `make bench-detection` (or `python bench/detection.py`); writes bench/results/detection.json
and bench/results/detection.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from guarded.api.stages import phase_in

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from operator_process import OperatorProcess  # noqa: E402
from rollouts import behaviour_change, guarded_rollout  # noqa: E402
from testbed import Cluster, connect  # noqa: E402
from traffic import (  # noqa: E402
    BASE_ERROR_RATIO,
    BASE_ORDER_RATIO,
    delete_namespace,
    first_ready,
    lost_orders,
    shop_with_traffic,
)
from waiting import eventually  # noqa: E402

SCENARIOS = {
    "orders-drop-99pct": {"order_ratio": "0.0005"},
    "orders-drop-50pct": {"order_ratio": "0.025"},
    "errors-0.5-to-5pct": {"error_ratio": "0.05"},
}
ANALYSIS = {"interval": "2s", "requests": "http_requests_total", "orders": "orders_total"}


def guarded(cluster: Cluster, scenario: str, annotations: dict) -> dict:
    shop, namespace = shop_with_traffic(cluster)
    body = guarded_rollout("release", waves=None, analysis=ANALYSIS)
    body["spec"]["change"]["podTemplatePatch"] = behaviour_change(**annotations)
    shop.create_rollout(body)
    ready_at = first_ready(shop, "shop-canary")

    def finished() -> dict | None:
        st = shop.status("release")
        phase = phase_in(st)
        return st if phase is not None and phase.terminal else None
    status = eventually(finished, timeout=900, interval=0.3, what="the rollout to end")
    done_at = time.time()
    time.sleep(4)  # let the last scrapes of the canary pods land
    if status["phase"] != "RolledBack":
        # Not caught: the change was promoted; every pod now loses orders. Say so, with the damage
        # the canary did on the way.
        lost = lost_orders(cluster, namespace, "shop-(canary-)?.*", ready_at - 1, done_at + 2)
        delete_namespace(cluster, namespace)
        return {"outcome": status["phase"], "detect_seconds": None, "rollback_complete_seconds": None,
                "rollback_wave": None, "seconds_to_end": round(done_at - ready_at, 2), **lost}
    rolling_back = next(h for h in status["history"] if h["reason"] == "RollingBack")
    detected_at = datetime.fromisoformat(rolling_back["time"].replace("Z", "+00:00")).timestamp()
    lost = lost_orders(cluster, namespace, "shop-canary-.*", ready_at - 1, done_at + 2)
    delete_namespace(cluster, namespace)
    return {"outcome": "RolledBack", "detect_seconds": round(detected_at - ready_at, 2),
            "rollback_complete_seconds": round(done_at - ready_at, 2),
            "rollback_wave": rolling_back.get("wave"), "reason": status.get("rollbackReason"),
            "message": rolling_back["message"][:300], **lost}


def unguarded(cluster: Cluster, annotations: dict, horizon: float) -> dict:
    shop, namespace = shop_with_traffic(cluster)
    patch = {"spec": {"template": behaviour_change(**annotations)}}
    shop.apps.patch_namespaced_deployment("shop", namespace, patch)
    generation = shop.deployment("shop").metadata.generation

    def bad_pods_ready() -> int:
        pods = shop.core.list_namespaced_pod(namespace, label_selector="app=shop").items
        return sum(1 for p in pods if (p.metadata.annotations or {}).get(next(iter(patch_keys))) is not None
                   and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))

    patch_keys = patch["spec"]["template"]["metadata"]["annotations"].keys()
    eventually(lambda: bad_pods_ready() >= 1, timeout=120, interval=0.1, what="the first bad pod Ready")
    ready_at = time.time()

    def rolled() -> bool:
        d = shop.deployment("shop")
        return (d.status.observed_generation or 0) >= generation and d.status.updated_replicas == 10 \
            and d.status.available_replicas == 10 and d.status.replicas == 10
    eventually(rolled, timeout=120, what="the rolling update to finish")
    rolled_out = time.time() - ready_at
    time.sleep(max(0.0, ready_at + horizon - time.time()) + 2)
    lost = lost_orders(cluster, namespace, "shop-.*", ready_at - 1, ready_at + horizon)
    delete_namespace(cluster, namespace)
    return {"rolling_update_seconds_after_first_bad_pod": round(rolled_out, 2), "horizon_seconds": horizon,
            "orders_lost_per_hour": round(lost["orders_lost"] * 3600 / horizon), **lost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=float, default=60.0, help="seconds of unguarded damage to measure")
    parser.add_argument("--repeat", type=int, default=2, help="guarded runs per scenario")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these")
    args = parser.parse_args()

    cluster = connect()
    operator = OperatorProcess(cluster)
    operator.install()
    operator.start()
    results: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "traffic": {
        "pods": 10, "requests_per_second": 300, "order_ratio": BASE_ORDER_RATIO, "error_ratio": BASE_ERROR_RATIO},
        "analysis": ANALYSIS, "waves": "default (1 pod, 10%, 50%, 100%; 60 s bakes)", "scenarios": {}}
    try:
        for name, annotations in SCENARIOS.items():
            if args.scenario and name not in args.scenario:
                continue
            runs = [guarded(cluster, name, annotations) for _ in range(args.repeat)]
            bad = unguarded(cluster, annotations, args.horizon)
            caught = [r for r in runs if r["outcome"] == "RolledBack"]
            results["scenarios"][name] = {
                "change": {f"sim.guarded.dev/{k.replace('_', '-')}": v for k, v in annotations.items()},
                "guarded": runs, "unguarded": bad, "caught": f"{len(caught)}/{len(runs)}",
                "median_detect_seconds": statistics.median(r["detect_seconds"] for r in caught) if caught else None,
                "median_rollback_complete_seconds":
                    statistics.median(r["rollback_complete_seconds"] for r in caught) if caught else None,
                "median_guarded_orders_lost": statistics.median(r["orders_lost"] for r in runs),
            }
            print(json.dumps({name: results["scenarios"][name]}, indent=1), flush=True)
            write(args.out, results)
    finally:
        operator.stop()
    write(args.out, results)
    print(summary(results))
    return 0


def write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "detection.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "detection.md").write_text(summary(results))


def summary(results: dict) -> str:
    lines = ["# bench/detection", "", f"Run {results['when']} on the local test bed: 10 pods, 300 req/s, "
             "5% order ratio, 0.5% errors; default waves; analysis every 2 s.", "",
             "| scenario | caught | in wave | detect (s, median) | rollback complete (s, median) | orders lost guarded "
             "(median) | orders lost unguarded in horizon | unguarded per hour |", "|---|---|---|---|---|---|---|---|"]
    for name, s in results["scenarios"].items():
        waves = sorted({r["rollback_wave"] for r in s["guarded"] if r["rollback_wave"] is not None})
        u = s["unguarded"]
        lines.append(f"| {name} | {s['caught']} | {', '.join(str(w + 1) for w in waves if w is not None) or '-'} | "
                     f"{s['median_detect_seconds']} | {s['median_rollback_complete_seconds']} | "
                     f"{s['median_guarded_orders_lost']} | {u['orders_lost']} in {u['horizon_seconds']:.0f} s | "
                     f"{u['orders_lost_per_hour']} |")
    lines += ["", "Times run from the first Ready bad pod. Orders lost = orders expected at the baseline ratio on "
              "the pods that ran the change, minus orders taken (Prometheus increase over the window).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
