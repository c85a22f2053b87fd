"""bench/scale: what N concurrent rollouts cost one operator (issue 11).

On the local test bed (its own operator, the traffic simulator, real Prometheus): N namespaces, each a
simulated 2-pod shop, get one GuardedRollout each at the same moment (1 pod, then 100%, each wave baking
--bake, judged every --interval on orders and errors). Measured from the operator's own /metrics
(handlers/telemetry.py) and the API server's:

* Kubernetes API requests the operator's client sent, in all and by verb and resource, per rollout per
  analysis interval (over the span from the first rollout created to the last one Succeeded);
* Prometheus queries, the same way (kopf's own requests, a watch per kind and a finalizer per rollout,
  are not counted: the test bed's API server runs without priority and fairness, whose metrics would
  name them);
* the operator's CPU seconds and peak resident memory, per reconcile the requests, queries and latency
  (p50, p99 from the reconcile histogram), and each rollout's time from creation to Succeeded.

`make bench-scale` (N=10; `SCALE_ARGS="--rollouts 50"`); writes bench/results/scale-<N>[-<label>].json.
Run it niced on a shared machine; do not run N >= 100 on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import kubernetes
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from operator_process import OperatorProcess  # noqa: E402
from rollouts import GROUP, PLURAL, VERSION, simulated_shop  # noqa: E402
from testbed import Cluster, connect  # noqa: E402
from traffic import prom  # noqa: E402
from waiting import eventually  # noqa: E402

REPLICAS = 2
RPS = "100"


def log(message: str) -> None:
    print(f"[scale {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def operator_metrics(op: OperatorProcess) -> Samples:
    r = requests.get(f"http://{op.metrics_address}/metrics", timeout=30)
    r.raise_for_status()
    return parse(r.text)


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w
                                                                          for k, w in labels.items()))


def by(samples: dict, name: str, *keys: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            d = dict(ls)
            key = " ".join(d.get(k, "") for k in keys)
            out[key] = out.get(key, 0.0) + v
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in sorted(after.items()) if v - before.get(k, 0.0) > 0}


def quantile(after: dict, before: dict, name: str, q: float) -> float | None:
    """A quantile of a histogram's increase (linear within the bucket, as histogram_quantile does)."""
    buckets: dict[float, float] = {}
    for (n, ls), v in after.items():
        if n == f"{name}_bucket":
            le = float(dict(ls)["le"])
            buckets[le] = buckets.get(le, 0.0) + v - before.get((n, ls), 0.0)
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank, lower, below = q * buckets[bounds[-1]], 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if le == float("inf"):
                return lower
            return round(lower + (le - lower) * (rank - below) / max(buckets[le] - below, 1e-9), 4)
        lower, below = le, buckets[le]
    return None


def make_shop(cluster: Cluster, prefix: str, i: int) -> str:
    namespace = f"{prefix}-{i:04d}"
    core = kubernetes.client.CoreV1Api(cluster.api())
    apps = kubernetes.client.AppsV1Api(cluster.api())
    core.create_namespace({"metadata": {"name": namespace, "labels": {"guarded.dev/test": "true"}}})
    body = simulated_shop("shop", REPLICAS)
    body["spec"]["template"]["metadata"]["annotations"]["sim.guarded.dev/rps"] = RPS
    apps.create_namespaced_deployment(namespace, body)
    return namespace


def rollout_body(bake: str, interval: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout", "metadata": {"name": "release"},
        "spec": {"target": {"name": "shop"},
                 "change": {"containers": [{"name": "app", "image": "registry.example/shop:2.0.0"}]},
                 "waves": [{"replicas": 1, "bake": bake}, {"weight": 100, "bake": bake}],
                 "progressDeadline": "5m",
                 "analysis": {"interval": interval, "requests": "http_requests_total", "orders": "orders_total",
                              "maxInconclusive": 1000}},
    }


class Watcher(threading.Thread):
    """Every rollout's phase as the API server shows it, polled once a second with one list."""

    def __init__(self, cluster: Cluster, prefix: str) -> None:
        super().__init__(daemon=True)
        self.custom = kubernetes.client.CustomObjectsApi(cluster.api())
        self.prefix = prefix
        self.done: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                items = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
            except Exception:  # the API server is busy: look again
                time.sleep(1)
                continue
            now = time.time()
            for item in items:
                ns = item["metadata"]["namespace"]
                if not ns.startswith(self.prefix):
                    continue
                phase = (item.get("status") or {}).get("phase") or "None"
                self.phases[ns] = phase
                if phase in ("Succeeded", "RolledBack", "Failed") and ns not in self.done:
                    self.done[ns] = now
            time.sleep(1)


def run(args: argparse.Namespace) -> dict:
    cluster = connect()
    prefix = f"scale-{secrets.token_hex(2)}"
    n = args.rollouts
    op = OperatorProcess(cluster)
    namespaces: list[str] = []
    try:
        op.install()
        log(f"{n} shops of {REPLICAS} pods in namespaces {prefix}-*")
        with ThreadPoolExecutor(8) as pool:
            namespaces = list(pool.map(lambda i: make_shop(cluster, prefix, i), range(n)))
        apps = kubernetes.client.AppsV1Api(cluster.api())

        def all_ready() -> bool:
            ready = sum(1 for d in apps.list_deployment_for_all_namespaces(label_selector="app=shop").items
                        if d.metadata.namespace.startswith(prefix) and (d.status.ready_replicas or 0) == REPLICAS)
            return ready == n

        eventually(all_ready, timeout=300, interval=2, what=f"{n} shops ready")
        eventually(lambda: prom(cluster, f'count(count by (namespace) (increase(http_requests_total{{namespace=~"'
                                         f'{prefix}-.*"}}[30s]) > 100))') >= n,
                   timeout=180, interval=2, what="30 s of every shop's traffic in Prometheus")
        op.start()
        log(f"operator pid {op.proc.pid if op.proc else '?'}; creating {n} rollouts at once")
        time.sleep(3)  # the operator's startup (its watches' first lists) out of the measured span
        watcher = Watcher(cluster, prefix)
        watcher.start()
        om0 = operator_metrics(op)
        custom = kubernetes.client.CustomObjectsApi(cluster.api())
        started = time.time()
        created: dict[str, float] = {}
        for ns in namespaces:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, rollout_body(args.bake, args.interval))
            created[ns] = time.time()
        rss_peak = 0.0
        deadline = time.time() + args.timeout
        while len(watcher.done) < n and time.time() < deadline:
            time.sleep(2)
            rss_peak = max(rss_peak, total(operator_metrics(op), "process_resident_memory_bytes"))
        ended = time.time()
        om1 = operator_metrics(op)
        watcher.stop.set()
        span = ended - started
        interval = float(args.interval.rstrip("s"))
        per = n * span / interval  # rollout-intervals in the span
        api = delta(by(om1, "guarded_kubernetes_api_requests_total", "verb", "resource"),
                    by(om0, "guarded_kubernetes_api_requests_total", "verb", "resource"))
        queries = delta(by(om1, "guarded_metric_queries_total", "kind"),
                        by(om0, "guarded_metric_queries_total", "kind"))
        reconciles = (total(om1, "guarded_reconcile_seconds_count") - total(om0, "guarded_reconcile_seconds_count"))
        steps = total(om1, "guarded_analysis_steps_total") - total(om0, "guarded_analysis_steps_total")
        times = sorted(watcher.done[ns] - created[ns] for ns in watcher.done)
        phases: dict[str, int] = {}
        for ns in namespaces:
            phases[watcher.phases.get(ns, "None")] = phases.get(watcher.phases.get(ns, "None"), 0) + 1
        api_total = sum(api.values())
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "label": args.label,
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
            "rollouts": n, "pods_per_shop": REPLICAS, "interval_seconds": interval, "bake": args.bake,
            "span_seconds": round(span, 1), "phases": phases,
            "time_to_end_seconds": {"p50": round(statistics.median(times), 1) if times else None,
                                    "max": round(times[-1], 1) if times else None},
            "analysis_steps": steps,
            "api_requests": {"total": api_total, "per_rollout": round(api_total / n, 1),
                             "per_rollout_per_interval": round(api_total / per, 2),
                             "by_verb_resource": api},
            "prometheus_queries": {"total": sum(queries.values()),
                                   "per_analysis_step": round(sum(queries.values()) / max(steps, 1), 2),
                                   "per_rollout_per_interval": round(sum(queries.values()) / per, 2),
                                   "by_kind": queries},
            "reconciles": {"total": reconciles, "per_rollout_per_interval": round(reconciles / per, 2),
                           "api_requests_each": round(api_total / max(reconciles, 1), 2),
                           "latency_p50_seconds": quantile(om1, om0, "guarded_reconcile_seconds", 0.5),
                           "latency_p99_seconds": quantile(om1, om0, "guarded_reconcile_seconds", 0.99)},
            "operator_cpu_seconds": round(total(om1, "process_cpu_seconds_total")
                                          - total(om0, "process_cpu_seconds_total"), 2),
            "operator_cpu_share_of_one_core": round((total(om1, "process_cpu_seconds_total")
                                                     - total(om0, "process_cpu_seconds_total")) / span, 3),
            "operator_rss_peak_mib": round(rss_peak / 2**20, 1),
        }
        return result
    finally:
        op.stop()
        op.remove_webhooks()
        core = kubernetes.client.CoreV1Api(cluster.api())
        for ns in namespaces:
            with contextlib.suppress(kubernetes.client.rest.ApiException):
                core.delete_namespace(ns, propagation_policy="Background")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=10)
    parser.add_argument("--bake", default="40s")
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.rollouts >= 100:
        log("warning: N >= 100 needs a machine of its own (docs/testbed.md)")
    result = run(args)
    out = args.out or ROOT / "bench" / "results" / f"scale-{args.rollouts}{'-' + args.label if args.label else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
