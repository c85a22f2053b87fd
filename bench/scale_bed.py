"""What bench/scale.py and bench/scale_soak.py share: N simulated shops on the test bed (and one more for a bad
release), an operator of the bench's own, its /metrics read and subtracted, and every rollout's phase polled.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes.watch
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
PODS_PER_SHOP = REPLICAS + 1  # the stable's pods and, at most, one more while the canary or the promotion surges
TERMINAL = ("Succeeded", "RolledBack", "Failed")
# The bad release (bench/peers' orders-99pct): its new pods take 0.05% of requests as orders instead of 5%.
BAD_BEHAVIOUR = {"sim.guarded.dev/order-ratio": "0.0005"}


def log(message: str) -> None:
    print(f"[scale {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# -- the operator's /metrics --

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def operator_metrics(op: OperatorProcess) -> Samples:
    r = requests.get(f"http://{op.metrics_address}/metrics", timeout=30)
    r.raise_for_status()
    return parse(r.text)


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w
                                                                          for k, w in labels.items()))


def by(samples: Samples, name: str, *keys: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            d = dict(ls)
            key = " ".join(d.get(k, "") for k in keys)
            out[key] = out.get(key, 0.0) + v
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in sorted(after.items()) if v - before.get(k, 0.0) > 0}


def quantile(after: Samples, before: Samples, name: str, q: float, **labels: str) -> float | None:
    """A quantile of a histogram's increase (linear within the bucket, as histogram_quantile does), over the
    series with `labels`."""
    buckets: dict[float, float] = {}
    for (n, ls), v in after.items():
        if n == f"{name}_bucket" and all(dict(ls).get(k) == w for k, w in labels.items()):
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


def reconcile_steps(om1: Samples, om0: Samples) -> dict[str, dict[str, float | None]]:
    """Per step of a reconcile (guarded_reconcile_step_seconds): how many, their total seconds, p50 and p99."""
    name = "guarded_reconcile_step_seconds"
    out: dict[str, dict[str, float | None]] = {}
    for step in sorted({dict(ls).get("step", "") for (n, ls) in om1 if n == f"{name}_count"}):
        out[step] = {"count": total(om1, f"{name}_count", step=step) - total(om0, f"{name}_count", step=step),
                     "seconds": round(total(om1, f"{name}_sum", step=step) - total(om0, f"{name}_sum", step=step), 1),
                     "p50": quantile(om1, om0, name, 0.5, step=step), "p99": quantile(om1, om0, name, 0.99, step=step)}
    return out


def per_interval(om1: Samples, om0: Samples, intervals: float) -> dict[str, dict[str, Any]]:
    """API requests (all, and GETs) and Prometheus queries between two reads, in all and per analysis interval
    (all rollouts together)."""
    api = delta(by(om1, "guarded_kubernetes_api_requests_total", "verb", "resource"),
                by(om0, "guarded_kubernetes_api_requests_total", "verb", "resource"))
    queries = delta(by(om1, "guarded_metric_queries_total", "kind"), by(om0, "guarded_metric_queries_total", "kind"))
    api_total, gets, query_total = sum(api.values()), sum(v for k, v in api.items() if k.startswith("get ")), \
        sum(queries.values())
    fence = delta(by(om1, "guarded_fence_checks_total", "by"), by(om0, "guarded_fence_checks_total", "by"))
    return {"api_requests": {"total": api_total, "gets": gets, "per_interval": round(api_total / intervals, 2),
                             "gets_per_interval": round(gets / intervals, 2), "by_verb_resource": api,
                             # the split-brain fence's checks: vouched for by its version watch, or a GET
                             "fence_checks": fence},
            "prometheus_queries": {"total": query_total, "per_interval": round(query_total / intervals, 2),
                                   "by_kind": queries}}


# -- the shops and their rollouts --

def image(version: str) -> str:
    return f"registry.example/shop:{version}"


def rollout_body(bake: str, interval: str, version: str = "2.0.0", bad: bool = False) -> dict[str, Any]:
    change: dict[str, Any] = {"containers": [{"name": "app", "image": image(version)}]}
    if bad:
        change["podTemplatePatch"] = {"metadata": {"annotations": dict(BAD_BEHAVIOUR)}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout", "metadata": {"name": "release"},
        "spec": {"target": {"name": "shop"}, "change": change,
                 "waves": [{"replicas": 1, "bake": bake}, {"weight": 100, "bake": bake}],
                 "progressDeadline": "5m",
                 "analysis": {"interval": interval, "requests": "http_requests_total", "orders": "orders_total",
                              "maxInconclusive": 1000}},
    }


def make_shop(cluster: Cluster, namespace: str) -> str:
    core = kubernetes.client.CoreV1Api(cluster.api())
    apps = kubernetes.client.AppsV1Api(cluster.api())
    core.create_namespace({"metadata": {"name": namespace, "labels": {"guarded.dev/test": "true"}}})
    body = simulated_shop("shop", REPLICAS)
    body["spec"]["template"]["metadata"]["annotations"]["sim.guarded.dev/rps"] = RPS
    apps.create_namespaced_deployment(namespace, body)
    return namespace


def check_capacity(cluster: Cluster, shops: int) -> dict[str, int]:
    """The kwok nodes must hold PODS_PER_SHOP pods of every shop besides the pods already there; else fail naming
    GUARDED_TESTBED_NODES (the test bed makes that many nodes of 250 pods when it starts)."""
    core = kubernetes.client.CoreV1Api(cluster.api())
    allocatable = sum(int((node.status.allocatable or {}).get("pods", "0")) for node in core.list_node().items)
    running = sum(1 for p in core.list_pod_for_all_namespaces().items
                  if p.spec.node_name and p.status.phase not in ("Succeeded", "Failed"))
    needed = PODS_PER_SHOP * shops
    if allocatable - running < needed:
        per_node = 250
        nodes = -(-(needed + running) // per_node)
        raise SystemExit(
            f"the test bed's nodes allocate {allocatable} pods and {running} already run: {shops} shops need "
            f"{needed} more ({PODS_PER_SHOP} each). Start the test bed with more kwok nodes ({per_node} pods each): "
            f"hack/testbed.sh down; GUARDED_TESTBED_NODES={nodes} hack/testbed.sh up (now "
            f"GUARDED_TESTBED_NODES={os.environ.get('GUARDED_TESTBED_NODES', '4 (default)')})")
    return {"allocatable_pods": allocatable, "pods_running_before": running, "pods_needed": needed}


class Watcher(threading.Thread):
    """Every rollout's phase (and status) as the API server shows it: one list, then a watch from its
    resourceVersion (listed again when the watch expires). A list a second of every rollout, as the bench first
    did, was itself a good part of the API server's work at N = 335."""

    def __init__(self, cluster: Cluster, prefix: str) -> None:
        super().__init__(daemon=True)
        self.custom = kubernetes.client.CustomObjectsApi(cluster.api())
        self.prefix = prefix
        self.done: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.stop = threading.Event()

    def _seen(self, item: dict[str, Any]) -> None:
        ns = item["metadata"]["namespace"]
        if not ns.startswith(self.prefix):
            return
        self.items[ns] = item
        phase = (item.get("status") or {}).get("phase") or "None"
        self.phases[ns] = phase
        if phase in TERMINAL and ns not in self.done:
            self.done[ns] = time.time()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                listed = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                for item in listed["items"]:
                    self._seen(item)
                stream = kubernetes.watch.Watch()
                for event in stream.stream(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                           resource_version=listed["metadata"]["resourceVersion"],
                                           timeout_seconds=60):
                    if self.stop.is_set():
                        stream.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED") and isinstance(event["object"], dict):
                        self._seen(event["object"])
            except Exception:  # the API server is busy, or the watch expired: list again
                time.sleep(1)


class Bed:
    """N healthy shops (and with `bad` one more, `<prefix>-bad`), all Ready and with 30 s of traffic in Prometheus,
    and the bench's own operator started on them; on exit the operator stops and the namespaces go."""

    def __init__(self, n: int, bad: bool = False) -> None:
        self.n, self.bad = n, bad
        self.cluster = connect()
        self.prefix = f"scale-{secrets.token_hex(2)}"
        self.namespaces = [f"{self.prefix}-{i:04d}" for i in range(n)]
        self.bad_namespace = f"{self.prefix}-bad" if bad else None
        # SCALE_OPERATOR_ENV="PYTHONTRACEMALLOC=12 ..." reaches the bench's operator alone (a diagnostic: the
        # memory report's allocation sites), not the bench, which would crawl under it.
        extra = dict(item.split("=", 1) for item in os.environ.get("SCALE_OPERATOR_ENV", "").split() if "=" in item)
        self.op = OperatorProcess(self.cluster, env=extra)
        self.capacity: dict[str, int] = {}
        self.made: list[str] = []

    @property
    def all_namespaces(self) -> list[str]:
        return self.namespaces + ([self.bad_namespace] if self.bad_namespace else [])

    def __enter__(self) -> Bed:
        shops = len(self.all_namespaces)
        self.capacity = check_capacity(self.cluster, shops)
        try:
            self.op.install()
            log(f"{self.n} shops{' and a bad release' if self.bad else ''} of {REPLICAS} pods in namespaces "
                f"{self.prefix}-*")
            with ThreadPoolExecutor(8) as pool:
                for ns in pool.map(lambda ns: make_shop(self.cluster, ns), self.all_namespaces):
                    self.made.append(ns)
            apps = kubernetes.client.AppsV1Api(self.cluster.api())

            def all_ready() -> bool:
                return sum(1 for d in apps.list_deployment_for_all_namespaces(label_selector="app=shop").items
                           if d.metadata.namespace.startswith(self.prefix)
                           and (d.status.ready_replicas or 0) == REPLICAS) == shops

            eventually(all_ready, timeout=300 + shops, interval=2, what=f"{shops} shops ready")
            # 1,000 requests of one pod (50 a second) in the last 30 s: some 20 s of its traffic scraped, not the
            # first two samples that increase() extrapolates.
            eventually(lambda: prom(self.cluster, f'count(count by (namespace) (increase(http_requests_total{{'
                                                  f'namespace=~"{self.prefix}-.*"}}[30s]) > 1000))') >= shops,
                       timeout=180, interval=2, what="20 s of every shop's traffic in Prometheus")
            self.op.start()
            if self.op.proc is not None:
                # `make bench-scale` nices the bench, and the operator would inherit it: under contention it would
                # then get only what the test bed's API server, Prometheus and simulator leave. It runs at their
                # priority (0, a process's default), as on a node of its own; only the bench's polling stays niced.
                with contextlib.suppress(PermissionError):
                    os.setpriority(os.PRIO_PROCESS, self.op.proc.pid, 0)
            log(f"operator pid {self.op.proc.pid if self.op.proc else '?'} (log {self.op.log_path})")
            time.sleep(3)  # the operator's startup (its watches' first lists) out of the measured span
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.op.stop()
        self.op.remove_webhooks()
        core = kubernetes.client.CoreV1Api(self.cluster.api())
        custom = kubernetes.client.CustomObjectsApi(self.cluster.api())
        for ns in self.made:
            # With the operator gone nothing would take its finalizer off, and the namespace would stay
            # Terminating (and its deletion load the next run): the bench's rollouts have ended, nothing to clean.
            with contextlib.suppress(kubernetes.client.rest.ApiException):
                for r in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
                    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, r["metadata"]["name"],
                                                          {"metadata": {"finalizers": None}})
            with contextlib.suppress(kubernetes.client.rest.ApiException):
                core.delete_namespace(ns, propagation_policy="Background")

    def metrics(self) -> Samples:
        return operator_metrics(self.op)

    def memory(self) -> dict[str, float]:
        """The operator's resident memory now and at its peak (MiB), from /proc: sampling it costs the operator
        nothing, where a scrape of its /metrics (per-rollout series, most of a megabyte at N = 335) costs its
        event loop some 5% of a core at one every 2 s."""
        assert self.op.proc is not None
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{self.op.proc.pid}/status").read_text().splitlines() if ":" in line)
        return {k: int(fields[f].split()[0]) / 1024 for k, f in (("rss", "VmRSS"), ("peak", "VmHWM"))}

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        kubernetes.client.CustomObjectsApi(self.cluster.api()).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body)
