"""The demo (`make demo`): a healthy release promoted, a bad one rolled back, and what it saved.

On the running test bed (hack/testbed.sh up; GUARDED_TESTBED_DIR and the port variables are
honoured), with the traffic simulator and Prometheus:

1. starts the operator as a process, deploys a shop of 10 pods serving 300 req/s (5% of
   requests place an order) in a namespace `demo-<random>`;
2. releases 2.0.0 as a GuardedRollout with short bakes and watches it to Succeeded;
3. releases 2.1.0, which drops orders by 99%, the same way and watches it to RolledBack;
4. releases 2.1.0 again as a plain rolling update of the Deployment (what happens without the
   operator) and lets it run for the same horizon;
5. prints the timeline as it happens and the orders 2.1.0 lost guarded and unguarded, and writes
   timeline.txt, timeline.json, orders-rate.png (and the operator's log) to --out.

The timeline is the operator's own record (status history, analysis evidence, Events), not the
demo's guess; only the unguarded act, which has no GuardedRollout, is timed by the demo.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from guarded.api.stages import phase_in

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from demo_report import Entry, chart, rollout_entries, unix  # noqa: E402

from operator_process import OperatorProcess  # noqa: E402
from rollouts import ANALYSIS, Shop, behaviour_change, guarded_rollout, simulated_shop  # noqa: E402
from testbed import Cluster, connect  # noqa: E402
from traffic import BASE_ORDER_RATIO, lost_orders, prom_range, shop_with_traffic  # noqa: E402
from waiting import eventually  # noqa: E402

STABLE, HEALTHY, BAD = "1.0.0", "2.0.0", "2.1.0"
BAD_BEHAVIOUR = {"order_ratio": "0.0005"}  # 99% fewer orders than the shop's 5% of requests
COLOURS = {STABLE: "#1f77b4", HEALTHY: "#2ca02c", BAD: "#d62728"}


def image(version: str) -> str:
    return f"registry.example/shop:{version}"


def say(text: str) -> None:
    print(text, flush=True)


def demo_shop() -> dict[str, Any]:
    """The simulated shop, shaped like a Deployment that passes pre-flight checks: an image pinned by
    tag, resource requests and limits, and a readiness probe (kwok marks the pods Ready)."""
    body = simulated_shop("shop", replicas=10)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image(STABLE)
    container.setdefault("ports", [{"name": "http", "containerPort": 8080}])
    container.setdefault("readinessProbe", {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2})
    container.setdefault("resources", {"requests": {"cpu": "100m", "memory": "128Mi"},
                                       "limits": {"cpu": "500m", "memory": "256Mi"}})
    return body


def waves(bake: int) -> list[dict[str, Any]]:
    return [{"replicas": 1, "bake": f"{bake}s"}, {"weight": 20, "bake": f"{bake}s"},
            {"weight": 50, "bake": f"{bake}s"}, {"weight": 100, "bake": f"{bake}s"}]


def release(name: str, version: str, steps: list[dict[str, Any]], description: str,
            behaviour: dict[str, str] | None = None) -> dict[str, Any]:
    body = guarded_rollout(name, image=image(version), waves=steps, analysis=ANALYSIS, description=description,
                           ticket=f"SHOP-{version}", rollbackPlan="The operator removes the canary; the stable "
                           "never changed.")
    if behaviour:
        body["spec"]["change"]["podTemplatePatch"] = behaviour_change(**behaviour)
    return body


class PodWatch:
    """Every pod the namespace ever had: its version (image tag), whether it was a canary, and when it
    was first Ready. Prometheus keeps a gone pod's series; this keeps which version it ran."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        # A client of its own: this runs on another thread.
        api = kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig,
                                                       context=cluster.context_for("admin"))
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.pods: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                for event in kubernetes.watch.Watch().stream(self.core.list_namespaced_pod, self.namespace,
                                                               timeout_seconds=5, _request_timeout=15):
                    self._see(event["object"])
                    if self.stopped.is_set():
                        return
            except Exception:  # a dropped watch is started again; the pods are listed afresh
                time.sleep(0.5)

    def _see(self, pod: Any) -> None:
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        name = pod.metadata.name
        with self.lock:
            info = self.pods.setdefault(name, {"version": pod.spec.containers[0].image.rsplit(":", 1)[-1],
                                               "canary": name.startswith("shop-canary-"), "ready_at": None})
            if ready and info["ready_at"] is None:
                info["ready_at"] = time.time()

    def select(self, version: str, canary: bool) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {n: dict(p) for n, p in self.pods.items() if p["version"] == version and p["canary"] == canary}

    def first_ready(self, version: str, canary: bool) -> float:
        def probe() -> float | None:
            times = [p["ready_at"] for p in self.select(version, canary).values() if p["ready_at"]]
            return min(times) if times else None
        return eventually(probe, timeout=120, interval=0.1, what=f"a Ready pod of {version}")

    def version_of(self, pod: str) -> str | None:
        with self.lock:
            return self.pods[pod]["version"] if pod in self.pods else None


def rollout_events(shop: Shop, name: str) -> list[dict[str, Any]]:
    return [{"time": (e.event_time or e.first_timestamp or e.last_timestamp).isoformat(), "reason": e.reason,
             "message": e.message, "wave": None} for e in shop.events(name)
            if (e.event_time or e.first_timestamp or e.last_timestamp) is not None]


def follow(shop: Shop, name: str, *, section: str, version: str, t0: float, records: dict[str, dict[str, Any]],
           timeout: float) -> dict[str, Any]:
    """Print the rollout's timeline as the operator records it, until its phase is terminal (Succeeded,
    RolledBack or Failed). Collects every analysis record on the way (the status keeps only the latest few)."""
    shown: set[tuple[float, str]] = set()
    deadline = time.monotonic() + timeout
    while True:
        obj = shop.rollout(name) or {}
        status = obj.get("status") or {}
        for record in status.get("analysis", {}).get("recent", []):
            records[record["time"]] = record
        if obj:
            for entry in rollout_entries(obj, records, [], section, version):
                if (entry.at, entry.text) not in shown:
                    shown.add((entry.at, entry.text))
                    say(entry.line(t0))
        phase = phase_in(status)
        if phase is not None and phase.terminal:
            return obj
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not reach Succeeded/RolledBack/Failed in {timeout:.0f}s; status:\n"
                               f"{json.dumps(status, indent=1)[:3000]}\n{shop.describe()}")
        time.sleep(0.5)


def unguarded(shop: Shop, pods: PodWatch, *, t0: float, horizon: float) -> tuple[list[Entry], float]:
    """The bad release as a plain rolling update of the Deployment; nothing watches it."""
    entries: list[Entry] = []

    def note(at: float, kind: str, text: str) -> None:
        entries.append(Entry(at, "unguarded", kind, text))
        say(entries[-1].line(t0))

    template = {**behaviour_change(**BAD_BEHAVIOUR), "spec": {"containers": [{"name": "app", "image": image(BAD)}]}}
    shop.apps.patch_namespaced_deployment(shop.name, shop.namespace, {"spec": {"template": template}})
    note(time.time(), "unguarded", f"Deployment shop's template changed to {BAD} directly, as kubectl apply would: "
         "a plain rolling update")
    generation = shop.deployment(shop.name).metadata.generation
    ready_at = pods.first_ready(BAD, canary=False)
    note(ready_at, "ready", f"first {BAD} pod Ready")

    def rolled() -> bool:
        s = shop.deployment(shop.name).status
        return (s.observed_generation or 0) >= generation and s.updated_replicas == s.available_replicas == 10 \
            and s.replicas == 10
    eventually(rolled, timeout=120, interval=0.2, what="the rolling update to finish")
    note(time.time(), "done", f"rolling update complete: 10 of 10 pods run {BAD}")
    time.sleep(max(0.0, ready_at + horizon - time.time()))
    running = sum(1 for p in shop.core.list_namespaced_pod(shop.namespace, label_selector="app=shop").items
                  if p.spec.containers[0].image == image(BAD) and p.metadata.deletion_timestamp is None)
    note(ready_at + horizon, "note", f"{horizon:.0f} s after its first pod: {running} pods still run {BAD}; "
         "nothing rolls it back")
    return entries, ready_at


def per_version(cluster: Cluster, pods: PodWatch, query: str, start: float,
                end: float) -> dict[str, list[tuple[float, float]]]:
    """A `sum by (pod)` range query summed per version (the pods' image tags)."""
    sums: dict[str, dict[float, float]] = {}
    for series in prom_range(cluster, query, start, end):
        points = sums.setdefault(pods.version_of(series["metric"].get("pod", "")) or "other", {})
        for t, v in series["values"]:
            points[t] = points.get(t, 0.0) + v
    return {version: sorted(points.items()) for version, points in sorted(sums.items())}


def titles(steps: list[dict[str, Any]]) -> dict[str, str]:
    bake = steps[0]["bake"]
    sizes = ", ".join(f"{w['replicas']} pod" if "replicas" in w else f"{w['weight']}%" for w in steps)
    return {"healthy": f"release {HEALTHY} (healthy) as GuardedRollout shop-2-0-0: waves {sizes}, each baking "
                       f"{bake}, judged every {ANALYSIS['interval']}",
            "bad": f"release {BAD} (drops orders by 99%) as GuardedRollout shop-2-1-0, same waves",
            "unguarded": f"release {BAD} again as a plain rolling update (no GuardedRollout)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output")
    parser.add_argument("--bake", type=int, default=15, help="seconds each wave bakes")
    parser.add_argument("--horizon", type=float, default=60.0,
                        help="seconds after the bad release's first pod over which orders lost are compared")
    parser.add_argument("--keep", action="store_true", help="leave the demo namespace (and its traffic) running")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    cluster = connect()
    operator = OperatorProcess(cluster)
    say("[demo] installing the CRDs and RBAC, starting the operator")
    operator.install()
    operator.start()
    pods: PodWatch | None = None
    namespace = None
    try:
        say("[demo] deploying the shop: 10 pods of 1.0.0, 300 req/s, 5% of requests place an order")
        shop, namespace = shop_with_traffic(cluster, prefix="demo", deployment=demo_shop(),
                                            labels={"guarded.dev/demo": "true"})
        pods = PodWatch(cluster, namespace)
        pods.start()
        say(f"[demo] namespace {namespace}: 10 pods Ready, traffic in Prometheus")
        run(cluster, shop, pods, operator, out=args.out, steps=waves(args.bake), horizon=args.horizon)
        say(f"\n[demo] wrote {args.out}/timeline.txt, timeline.json, orders-rate.png, operator.log")
        return 0
    except BaseException:
        say(f"[demo] stopped early; the operator's log is in {args.out}/operator.log")
        raise
    finally:
        if pods is not None:
            pods.stop()
        operator.stop()
        shutil.copyfile(operator.log_path, args.out / "operator.log")
        if namespace and not args.keep:
            kubernetes.client.CoreV1Api(cluster.api()).delete_namespace(namespace, propagation_policy="Background")


def run(cluster: Cluster, shop: Shop, pods: PodWatch, operator: OperatorProcess, *, out: Path,
        steps: list[dict[str, Any]], horizon: float) -> None:
    """The three acts, then the orders lost, the timeline and the chart."""
    records: dict[str, dict[str, Any]] = {}
    heading = titles(steps)
    t0 = time.time()
    say(f"\n== 1. {heading['healthy']}")
    shop.create_rollout(release("shop-2-0-0", HEALTHY, steps, "New checkout flow"))
    healthy = follow(shop, "shop-2-0-0", section="healthy", version=HEALTHY, t0=t0, records=records, timeout=300)

    say(f"\n== 2. {heading['bad']}")
    shop.create_rollout(release("shop-2-1-0", BAD, steps, "Checkout refactor (drops 99% of orders)", BAD_BEHAVIOUR))
    bad = follow(shop, "shop-2-1-0", section="bad", version=BAD, t0=t0, records=records, timeout=300)
    if bad["status"]["phase"] != "RolledBack":
        raise RuntimeError(f"the bad release ended {bad['status']['phase']}, not RolledBack")
    operator.stop()  # what follows is the same release without the operator
    bad_ready = pods.first_ready(BAD, canary=True)
    history = bad["status"]["history"]
    caught = next(h for h in history if h["reason"] == "RollingBack")
    restored = next(unix(h["time"]) for h in history if h["reason"] == "RolledBack")
    horizon = max(horizon, restored - bad_ready + 5)

    say(f"\n== 3. {heading['unguarded']}, watched for {horizon:.0f} s")
    unguarded_entries, unguarded_ready = unguarded(shop, pods, t0=t0, horizon=horizon)
    time.sleep(3)  # the last scrapes of the horizon land in Prometheus
    end = time.time()

    namespace = shop.namespace
    lost_guarded = lost_orders(cluster, namespace, "|".join(pods.select(BAD, canary=True)), bad_ready - 1,
                               bad_ready + horizon)
    lost_plain = lost_orders(cluster, namespace, "|".join(pods.select(BAD, canary=False)), unguarded_ready - 1,
                             unguarded_ready + horizon)
    outcome = {
        "horizon_seconds": round(horizon, 1), "bad_release": BAD, "change": "orders per request 5% -> 0.05%",
        "guarded": {"rollback_wave": (caught.get("wave") or 0) + 1,
                    "caught_seconds_after_first_bad_pod": round(unix(caught["time"]) - bad_ready, 2),
                    "rolled_back_seconds_after_first_bad_pod": round(restored - bad_ready, 2), **lost_guarded},
        "unguarded": {**lost_plain, "orders_lost_per_hour": round(lost_plain["orders_lost"] * 3600 / horizon)},
    }
    entries = (rollout_entries(healthy, records, rollout_events(shop, "shop-2-0-0"), "healthy", HEALTHY)
               + rollout_entries(bad, records, rollout_events(shop, "shop-2-1-0"), "bad", BAD)
               + unguarded_entries)
    write_timeline(out, entries, t0=t0, heading=heading, outcome=outcome, namespace=namespace, steps=steps)
    draw_chart(out, cluster, pods, entries, namespace=namespace, t0=t0, end=end, horizon=horizon, outcome=outcome)
    say("\n" + summary(outcome))


def write_timeline(out: Path, entries: list[Entry], *, t0: float, heading: dict[str, str], outcome: dict[str, Any],
                   namespace: str, steps: list[dict[str, Any]]) -> None:
    """timeline.txt for people, timeline.json for machines."""
    (out / "timeline.txt").write_text(timeline_text(entries, t0, heading) + "\n\n" + summary(outcome) + "\n")
    (out / "timeline.json").write_text(json.dumps({
        "namespace": namespace, "started_at": datetime.fromtimestamp(t0, UTC).isoformat(timespec="milliseconds"),
        "traffic": {"pods": 10, "requests_per_second": 300, "order_ratio": BASE_ORDER_RATIO},
        "waves": steps, "analysis": ANALYSIS, "orders_lost": outcome,
        "timeline": [e.as_json(t0) for e in entries]}, indent=2) + "\n")


def draw_chart(out: Path, cluster: Cluster, pods: PodWatch, entries: list[Entry], *, namespace: str, t0: float,
               end: float, horizon: float, outcome: dict[str, Any]) -> None:
    """orders-rate.png: orders per second by version, expected and actual, with the three acts marked."""
    lost_guarded, lost_plain = outcome["guarded"], outcome["unguarded"]
    selector = f'namespace="{namespace}"'
    orders = per_version(cluster, pods, f"sum by (pod) (rate(orders_total{{{selector}}}[5s]))", t0 - 15, end)
    expected = per_version(cluster, pods, f'{BASE_ORDER_RATIO} * sum by (pod) '
                           f'(rate(http_requests_total{{{selector},code="200"}}[5s]))', t0 - 15, end)
    spans = {
        "healthy": (*span(entries, "healthy"), f"{HEALTHY}: guarded, promoted"),
        "bad": (*span(entries, "bad"), f"{BAD}: guarded, rolled back\n({lost_guarded['orders_lost']:.0f} orders lost)"),
        "unguarded": (*span(entries, "unguarded"), f"{BAD}: unguarded rolling update\n"
                      f"({lost_plain['orders_lost']:.0f} orders lost in {horizon:.0f} s)"),
    }
    chart(out / "orders-rate.png", t0=t0, orders=orders, expected=expected, lost_version=BAD, entries=entries,
          spans=spans, colours=COLOURS, title=f"Demo shop (10 pods, 300 req/s): orders per second by version; "
          f"{HEALTHY} and {BAD} guarded, then {BAD} unguarded")


def span(entries: list[Entry], section: str) -> tuple[float, float]:
    times = [e.at for e in entries if e.section == section]
    return min(times), max(times)


def timeline_text(entries: list[Entry], t0: float, heading: dict[str, str]) -> str:
    lines, section = [f"Timeline of the demo (times since the first release started, "
                      f"{datetime.fromtimestamp(t0, UTC):%Y-%m-%d %H:%M:%S} UTC)"], None
    for e in entries:
        if e.section != section:
            section = e.section
            lines.append(f"== {heading.get(section, section)}")
        lines.append(e.line(t0))
    return "\n".join(lines)


def summary(outcome: dict[str, Any]) -> str:
    g, u, horizon = outcome["guarded"], outcome["unguarded"], outcome["horizon_seconds"]
    share = g["orders_lost"] / u["orders_lost"] * 100 if u["orders_lost"] else 0.0
    return "\n".join([
        f"Orders lost to {outcome['bad_release']} ({outcome['change']}) in the {horizon:.0f} s after its first pod "
        "was Ready:",
        f"  guarded    {g['orders_lost']:6.0f}   (caught in wave {g['rollback_wave']} "
        f"{g['caught_seconds_after_first_bad_pod']:.1f} s after its first pod was Ready, rolled back "
        f"{g['rolled_back_seconds_after_first_bad_pod']:.1f} s after)",
        f"  unguarded  {u['orders_lost']:6.0f}   (every pod runs it; at this rate {u['orders_lost_per_hour']:,} "
        "orders an hour until someone notices)",
        f"The guarded release lost {share:.1f}% of what the unguarded rolling update lost.",
    ])


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
