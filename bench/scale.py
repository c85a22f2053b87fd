"""bench/scale: what N concurrent rollouts cost one operator, and whether it still judges right (issue 11).

On the local test bed (its own operator, the traffic simulator, real Prometheus): N namespaces, each a
simulated 2-pod shop, get one GuardedRollout each at the same moment (1 pod, then 100%, each wave baking
--bake, judged every --interval on orders and errors). Measured from the operator's own /metrics
(handlers/telemetry.py) and the API server's:

* Kubernetes API requests the operator's client sent, in all and by verb and resource, per analysis interval
  (all rollouts together; GETs apart) and per rollout per interval (over the span from the first rollout
  created to the last one ended);
* Prometheus queries, the same way (kopf's own requests, a watch per kind and a finalizer per rollout,
  are not counted: the test bed's API server runs without priority and fairness, whose metrics would
  name them);
* the operator's CPU seconds and peak resident memory, per reconcile the requests, queries and latency
  (p50, p99 from the reconcile histogram; the wait for a reconcile worker apart), and each rollout's time from
  creation to its end.

--bad adds one more namespace whose release is bad (its new pods drop 99% of orders, as bench/peers'
orders-99pct) and reports its outcome and its detection time: the RollingBack entry of its status history
minus the moment its first canary pod was Ready (polled, as bench/peers does). `--rollouts 0 --bad` is the
reference at N = 1. --soak SECONDS keeps the N rollouts going for that long instead (bench/scale_soak.py).

`make bench-scale` (N=10; `SCALE_ARGS="--rollouts 50 --bad"`); writes bench/results/scale-<N>[-<label>].json.
`make bench-soak`; bench/scale_plot.py draws docs/images/scale-cost.png from the results.
Run it niced on a shared machine; do not run N >= 100 on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from scale_bed import (
    REPLICAS,
    ROOT,
    Bed,
    Watcher,
    log,
    per_interval,
    quantile,
    reconcile_steps,
    rollout_body,
    total,
)

# The guards each analysis step judges (spec.analysis with requests and orders): order-rate and error-rate.
TEMPLATES = 2
CREATORS = 8  # rollouts created at once


class CanaryReady(threading.Thread):
    """When the bad release's canary first has a Ready pod, polled every 0.2 s (bench/peers' first_ready)."""

    def __init__(self, bed: Bed, namespace: str) -> None:
        super().__init__(daemon=True)
        cluster = dataclasses.replace(bed.cluster, _clients={})  # a client of its own: this runs on a thread
        self.apps = kubernetes.client.AppsV1Api(cluster.api())
        self.namespace = namespace
        self.at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.at is None:
            try:
                d = self.apps.read_namespaced_deployment("shop-canary", self.namespace)
                if (d.status.ready_replicas or 0) >= 1:
                    self.at = time.time()
            except kubernetes.client.rest.ApiException:
                pass  # not created yet
            time.sleep(0.2)


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bad_release(item: dict[str, Any], created: float, ready: float | None, ended: float | None) -> dict[str, Any]:
    st = item.get("status") or {}
    back = next((h for h in st.get("history", []) if h["reason"] == "RollingBack"), None)
    detected = timestamp(back["time"]) if back else None
    wave = back.get("wave") if back else st.get("wave")
    return {"namespace": item["metadata"]["namespace"], "phase": st.get("phase"),
            "detected_after_seconds": round(detected - ready, 1) if detected and ready else None,
            "canary_ready_after_create_seconds": round(ready - created, 1) if ready else None,
            "ended_after_create_seconds": round(ended - created, 1) if ended else None,
            "wave": wave + 1 if isinstance(wave, int) else None,
            "message": (back or {}).get("message", "")[:300],
            "timeline": timeline(st, ready) if ready else None}


def timeline(st: dict[str, Any], ready: float) -> dict[str, Any]:
    """Where the bad release's time went after its canary was Ready: its history and analysis start, and each
    judgement kept in status (the last 8) with its largest log LR, in seconds after Ready."""
    def after(text: str | None) -> float | None:
        return round(timestamp(text) - ready, 2) if text else None

    analysis = st.get("analysis") or {}
    return {"history": [[h["reason"], after(h["time"])] for h in st.get("history", []) if h.get("time")],
            "analysis_since": after(analysis.get("since")),
            "judgements": [[after(r.get("time")), r.get("verdict"), max(
                (e.get("logLr", float("-inf")) for j in r.get("judgements", []) for e in j.get("evidence", [])),
                default=None)] for r in analysis.get("recent", [])]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.rollouts
    with Bed(n, bad=args.bad) as bed:
        in_flight = len(bed.all_namespaces)
        log(f"creating {in_flight} rollouts at once")
        watcher = Watcher(bed.cluster, bed.prefix)
        watcher.start()
        canary = CanaryReady(bed, bed.bad_namespace) if bed.bad_namespace else None
        if canary:
            canary.start()
        om0 = bed.metrics()
        started = time.time()
        created: dict[str, float] = {}

        def create(ns: str) -> None:
            bed.create(ns, rollout_body(args.bake, args.interval))
            created[ns] = time.time()

        # As a platform's many teams would, not one after the other: each create waits on the API server and
        # the operator's admission webhook, and one at a time took 8 minutes to create 1,000.
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(create, bed.namespaces))
        if bed.bad_namespace:  # the last: it is judged while all the others run
            bed.create(bed.bad_namespace, rollout_body(args.bake, args.interval, bad=True))
            created[bed.bad_namespace] = time.time()
        creating = round(max(created.values()) - started, 1)
        log(f"created {len(created)} rollouts in {creating} s")
        deadline = time.time() + args.timeout
        while len(watcher.done) < in_flight and time.time() < deadline:
            time.sleep(2)
        ended = time.time()
        rss_peak = bed.memory()["peak"]
        om1 = bed.metrics()
        watcher.stop.set()
        if canary:
            canary.stop.set()
    span = ended - started
    interval = float(args.interval.rstrip("s"))
    intervals = span / interval
    per = in_flight * intervals  # rollout-intervals in the span
    counts = per_interval(om1, om0, intervals)
    api, queries = counts["api_requests"], counts["prometheus_queries"]
    reconciles = total(om1, "guarded_reconcile_seconds_count") - total(om0, "guarded_reconcile_seconds_count")
    steps = total(om1, "guarded_analysis_steps_total") - total(om0, "guarded_analysis_steps_total")
    healthy = [ns for ns in bed.namespaces if ns in watcher.done]
    times = sorted(watcher.done[ns] - created[ns] for ns in healthy)
    phases: dict[str, int] = {}
    for ns in bed.namespaces:
        phases[watcher.phases.get(ns, "None")] = phases.get(watcher.phases.get(ns, "None"), 0) + 1
    cpu = total(om1, "process_cpu_seconds_total") - total(om0, "process_cpu_seconds_total")
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "incremental_queries": os.environ.get("GUARDED_INCREMENTAL_QUERIES", "1") != "0",
        "rollouts": n, "bad": args.bad, "rollouts_in_flight": in_flight, "pods_per_shop": REPLICAS,
        "interval_seconds": interval, "bake": args.bake, "capacity": bed.capacity,
        "created_in_seconds": creating,
        "span_seconds": round(span, 1), "intervals": round(intervals, 1), "phases": phases,
        "time_to_end_seconds": {"p50": round(statistics.median(times), 1) if times else None,
                                "max": round(times[-1], 1) if times else None},
        "analysis_steps": steps,
        "api_requests": {"total": api["total"], "per_interval": api["per_interval"],
                         "gets_per_interval": api["gets_per_interval"],
                         "per_rollout": round(api["total"] / in_flight, 1),
                         "per_rollout_per_interval": round(api["total"] / per, 2),
                         "by_verb_resource": api["by_verb_resource"],
                         "fence_checks": api["fence_checks"],
                         "version_watch_lag_p50_p99": [quantile(om1, om0, "guarded_version_watch_lag_seconds", q)
                                                       for q in (0.5, 0.99)]},
        "prometheus_queries": {"total": queries["total"], "per_interval": queries["per_interval"],
                               "per_interval_per_template": round(queries["per_interval"] / TEMPLATES, 2),
                               "per_analysis_step": round(queries["total"] / max(steps, 1), 2),
                               "per_rollout_per_interval": round(queries["total"] / per, 2),
                               "by_kind": queries["by_kind"]},
        "reconciles": {"total": reconciles, "per_rollout_per_interval": round(reconciles / per, 2),
                       "api_requests_each": round(api["total"] / max(reconciles, 1), 2),
                       "latency_p50_seconds": quantile(om1, om0, "guarded_reconcile_seconds", 0.5),
                       "latency_p99_seconds": quantile(om1, om0, "guarded_reconcile_seconds", 0.99),
                       "wait_p50_seconds": quantile(om1, om0, "guarded_reconcile_wait_seconds", 0.5),
                       "wait_p99_seconds": quantile(om1, om0, "guarded_reconcile_wait_seconds", 0.99),
                       "wait_changing_p50_seconds": quantile(om1, om0, "guarded_reconcile_wait_seconds", 0.5,
                                                             changing="true"),
                       "wait_changing_p99_seconds": quantile(om1, om0, "guarded_reconcile_wait_seconds", 0.99,
                                                             changing="true"),
                       "wait_pressing_p99_seconds": quantile(om1, om0, "guarded_reconcile_wait_seconds", 0.99,
                                                             pressing="true"),
                       "steps": reconcile_steps(om1, om0)},
        "operator_cpu_seconds": round(cpu, 2),
        "operator_cpu_share_of_one_core": round(cpu / span, 3),
        "operator_rss_peak_mib": round(rss_peak, 1),
    }
    if bed.bad_namespace and canary:
        ns = bed.bad_namespace
        item = watcher.items.get(ns, {"metadata": {"namespace": ns}})
        result["bad_release"] = bad_release(item, created[ns], canary.at, watcher.done.get(ns))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=10, help="healthy rollouts at once (N)")
    parser.add_argument("--bad", action="store_true", help="one more rollout, of a release that drops 99%% of orders")
    parser.add_argument("--bake", default="40s")
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help="keep the N rollouts going this long, sampling the operator's memory "
                        "(bench/scale_soak.py)")
    parser.add_argument("--warmup", type=float, default=600, help="soak: seconds left out of the RSS slope")
    parser.add_argument("--png", type=Path, default=None, help="soak: the RSS plot (docs/images/soak-<N>.png)")
    args = parser.parse_args()
    if args.rollouts < 0 or (args.rollouts == 0 and (not args.bad or args.soak)):
        parser.error("--rollouts 0 needs --bad (the bad release alone), and a soak needs rollouts")
    if args.rollouts >= 100:
        log("warning: N >= 100 needs a machine of its own (docs/testbed.md)")
    if args.soak:
        from scale_soak import soak, write
        write(args, soak(args))
        return
    result = run(args)
    out = args.out or ROOT / "bench" / "results" / f"scale-{args.rollouts}{'-' + args.label if args.label else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    bad = result.get("bad_release")
    log(f"{result['rollouts_in_flight']} rollouts: {result['phases']}; API {result['api_requests']['per_interval']} "
        f"requests per interval ({result['api_requests']['gets_per_interval']} GETs), "
        f"{result['prometheus_queries']['per_interval']} Prometheus queries per interval"
        + (f"; bad release {bad['phase']}, detected {bad['detected_after_seconds']} s after its canary Ready"
           if bad else ""))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
