"""bench/floor: where the time goes between a collapsed canary's first Ready pod and its rollback (issue 15).

On the test bed, the demo's shop (10 pods, 300 req/s, 5% of requests order, 0.5% fail) gets a release whose
new pods take 99% fewer orders, under the demo's waves and analysis (`falseRollbackRate` 0.001, every 2 s),
`--runs` times. Per run, from the canary pods' raw samples in Prometheus and the rollout's own analysis
records, the time from the first canary pod Ready to the rollback is cut into:

* ready -> traffic: until the simulator sends the pod requests (estimated from its first sample's count);
* the floor: the canary traffic in which a healthy canary would have taken the information floor's orders,
  ln(4/alpha) / KL(0.01 || 0.8) (about 11 orders at alpha 0.001: docs/judges.md): evidence no judge with
  that false-rollback rate can do without;
* beyond the floor: from there to the end of the last interval the failing judgement read;
* read lag: from that interval's end to the judgement (SCRAPE_LAG_SECONDS, the next reconcile);
* to stopped: from the rollback decision to the canary's last request.

and the orders lost (orders expected on the canary pods at the base ratio, minus those taken) against the
floor. Writes bench/results/floor.json and floor.md. `make bench-floor` (FLOOR_ARGS="--runs 10").
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "hack"))

from demo import demo_shop, release, waves  # noqa: E402

from guarded.api.stages import phase_in  # noqa: E402
from guarded.core.analysis import SCRAPE_LAG_SECONDS  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402
from rollouts import ANALYSIS  # noqa: E402
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

COLLAPSE, TOLERATED = 0.01, 0.8   # orders x 0.01 against the Stable judge's boundary (stableTolerance 0.2)
PAIRS = 4                         # (orders, errors) x (Stable, PreRollout): alpha is split over them
BAKE = 15


def floor_orders(alpha: float) -> float:
    """Orders a healthy canary would have taken in the least evidence that tells a collapse apart at alpha."""
    kl = COLLAPSE * math.log(COLLAPSE / TOLERATED) - COLLAPSE + TOLERATED
    return math.log(PAIRS / alpha) / kl


def log(message: str) -> None:
    print(f"[floor {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def samples(cluster: Cluster, query: str, at: float) -> dict[str, list[tuple[float, float]]]:
    """Raw samples of a range selector (`x[5m]`) at `at`, per pod, summed over the pod's other labels."""
    r = requests.get(f"{cluster.prometheus_url}/api/v1/query", timeout=30, params={"query": query, "time": f"{at:.3f}"})
    r.raise_for_status()
    per_pod: dict[str, dict[float, float]] = {}
    for series in r.json()["data"]["result"]:
        pod = per_pod.setdefault(series["metric"].get("pod", ""), {})
        for t, v in series["values"]:
            pod[float(t)] = pod.get(float(t), 0.0) + float(v)
    return {pod: sorted(vals.items()) for pod, vals in per_pod.items()}


class Records:
    """Every analysis record the rollout's status showed (it keeps only the latest few), polled."""

    def __init__(self, shop: Any, name: str) -> None:
        self.shop, self.name = shop, name
        self.seen: dict[str, dict[str, Any]] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _take(self, status: dict[str, Any]) -> None:
        for record in (status.get("analysis") or {}).get("recent") or []:
            self.seen.setdefault(record["time"], record)

    def _run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(Exception):  # a failed poll is retried
                self._take(self.shop.status(self.name))
            self.stopped.wait(0.2)

    def stop(self, final: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The records in time order, with those of the `final` status the last poll may have missed."""
        self.stopped.set()
        self.thread.join(timeout=5)
        if final is not None:
            self._take(final)
        return [self.seen[t] for t in sorted(self.seen)]


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def breakdown(*, ready_at: float, decided_at: float, failing_at: float, requests_by_pod: dict, floor: float,
              interval: float, read_requests: float | None = None) -> dict[str, Any]:
    """The time from the first canary pod Ready to the rollback decision, cut where the evidence was.

    The evidence the Fail read ends at the canary's scrape whose requests (every canary pod's counters, from
    zero) are the ones its Stable judge counted (`read_requests`); without them, at the end of the grid's
    interval the judgement could read."""
    first_pod = min(requests_by_pod, key=lambda p: requests_by_pod[p][0][0])
    reqs = requests_by_pod[first_pod]
    t1, v1 = reqs[0]
    later = [(t, v) for t, v in reqs if t > t1]
    rate = (later[-1][1] - v1) / (later[-1][0] - t1) if later and later[-1][0] > t1 else 30.0
    began = t1 - v1 / rate if rate > 0 else t1
    # When a healthy canary would have taken the floor's orders: the canary's requests (every canary pod)
    # at the base ratio, counted from when traffic began.
    per_order = BASE_ORDER_RATIO * (1 - BASE_ERROR_RATIO)
    need = floor / per_order
    floor_at = None
    times = sorted({t for series in requests_by_pod.values() for t, _ in series})
    for t in times:
        served = sum(_value_at(series, t) for series in requests_by_pod.values())
        if served >= need:
            prev = max((u for u in times if u < t), default=began)
            before = sum(_value_at(series, prev) for series in requests_by_pod.values()) if prev > began else 0.0
            floor_at = prev + (need - before) / max(served - before, 1e-9) * (t - prev)
            break
    read_end = math.floor((failing_at - SCRAPE_LAG_SECONDS) / interval) * interval
    if read_requests is not None:
        read_end = next((t for t in times if sum(_value_at(series, t) for series in requests_by_pod.values())
                         >= read_requests - 0.5), read_end)
    last_served = max((u for series in requests_by_pod.values() for (_, v), (u, w) in itertools.pairwise(series)
                       if w > v), default=t1)
    out = {
        "ready_to_traffic": round(began - ready_at, 2),
        "first_sample_after_traffic": round(t1 - began, 2),
        "floor": round(floor_at - began, 2) if floor_at else None,
        "beyond_floor": round(read_end - floor_at, 2) if floor_at else None,
        "read_lag": round(failing_at - read_end, 2),
        "decision_after_judgement": round(decided_at - failing_at, 2),
        "stopped_after_decision": round(last_served - decided_at, 2),
        "ready_to_decision": round(decided_at - ready_at, 2),
        "canary_rps": round(rate, 1),
        "at": {"ready": round(ready_at, 2), "traffic": round(began, 2), "first_sample": t1,
               "floor": round(floor_at, 2) if floor_at else None, "read_end": read_end, "judged": failing_at,
               "decided": decided_at, "last_served": last_served},
    }
    return out


def _read_requests(record: dict[str, Any]) -> float | None:
    """The canary requests the order-rate's Stable judge counted in a record (None if not kept)."""
    for j in record.get("judgements", []):
        for e in j.get("evidence", []):
            if j.get("metric") == "order-rate" and e.get("judge") == "Stable" and e.get("canaryRequests"):
                return float(e["canaryRequests"])
    return None


def _value_at(series: list[tuple[float, float]], t: float) -> float:
    value = 0.0
    for u, v in series:
        if u > t:
            break
        value = v
    return value


def run_case(cluster: Cluster, floor: float, cap: float, interval: str) -> dict[str, Any]:
    shop, namespace = shop_with_traffic(cluster, prefix="floor", deployment=demo_shop())
    body = release("release", "2.0.0", waves(BAKE), "bench/floor: orders -99%", {"order_ratio": "0.0005"})
    body["spec"]["analysis"]["interval"] = interval
    shop.create_rollout(body)
    records = Records(shop, "release")
    st: dict[str, Any] | None = None
    try:
        ready_at = first_ready(shop, "shop-canary")

        def finished() -> dict[str, Any] | None:
            st = shop.status("release")
            phase = phase_in(st)
            return st if phase is not None and phase.terminal else None
        st = eventually(finished, timeout=cap, interval=0.3, what="the rollout to end")
    finally:
        recs = records.stop(st)
    end = time.time()
    time.sleep(4)
    lost = lost_orders(cluster, namespace, "shop-canary-.*", ready_at - 1, end + 2)
    sel = f'namespace="{namespace}",pod=~"shop-canary-.*"'
    reqs = samples(cluster, f"http_requests_total{{{sel}}}[10m]", end + 3)
    delete_namespace(cluster, namespace)
    back = next((h for h in st.get("history", []) if h["reason"] == "RollingBack"), None)
    out: dict[str, Any] = {"namespace": namespace, "phase": st.get("phase"), "reason": st.get("rollbackReason"),
                           "wave": back.get("wave") if back else None, **lost,
                           "lost_over_floor": round(lost["orders_lost"] / floor, 2)}
    failing = [r for r in recs if r.get("verdict") == "Fail"]
    if back is None or not failing or not reqs:
        out["error"] = "no rollback on analysis, or no canary samples"
        return out
    out.update(breakdown(ready_at=ready_at, decided_at=stamp(back["time"]), failing_at=stamp(failing[0]["time"]),
                         requests_by_pod=reqs, floor=floor, interval=float(interval.rstrip("s")),
                         read_requests=_read_requests(failing[0])))
    judged = [r for r in recs if any(e.get("canaryRequests") for j in r.get("judgements", [])
                                     for e in j.get("evidence", []))]
    out["judgements_with_canary_data"] = len(judged)
    out["failing_judgement"] = {j["metric"]: {e["judge"]: round(e.get("logLr", 0.0), 2) for e in j["evidence"]}
                                for j in failing[0].get("judgements", [])}
    return out


def summary(cases: list[dict[str, Any]], floor: float) -> dict[str, Any]:
    """Medians: the time's parts over the runs analysed, orders lost over every run rolled back."""
    ok = [c for c in cases if "error" not in c]
    keys = ("ready_to_traffic", "first_sample_after_traffic", "floor", "beyond_floor", "read_lag",
            "decision_after_judgement", "stopped_after_decision", "ready_to_decision")
    median = {k: round(statistics.median(c[k] for c in ok if c.get(k) is not None), 2)
              for k in keys if any(c.get(k) is not None for c in ok)}
    back = [c for c in cases if c.get("phase") == "RolledBack" and c.get("orders_lost") is not None]
    for k in ("orders_lost", "lost_over_floor"):
        if back:
            median[k] = round(statistics.median(c[k] for c in back), 2)
    return {"runs": len(cases), "analysed": len(ok), "rolled_back": len(back), "floor_orders": round(floor, 2),
            "median": median}


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    m = s.get("median", {})
    lines = [
        "# bench/floor", "",
        f"Run {results['when']} ({results['code']}) on the local test bed: the demo's shop and waves, "
        f"analysis every {results['analysis']['interval']}, falseRollbackRate {ANALYSIS['falseRollbackRate']}; "
        f"a release whose pods take 99% fewer orders, {s['runs']} runs ({s['rolled_back']} rolled back, "
        f"{s['analysed']} with every part of the time found).", "",
        f"Information floor: {s['floor_orders']} orders. Orders lost (median): {m.get('orders_lost')} "
        f"= {m.get('lost_over_floor')} x the floor.", "",
        "| from the first canary pod Ready | median (s) |", "|---|---|"]
    for key, label in (("ready_to_traffic", "to its first request (simulator)"),
                       ("first_sample_after_traffic", "first request to first scrape"),
                       ("floor", "the floor: traffic a healthy canary takes the floor's orders in"),
                       ("beyond_floor", "beyond the floor: to the canary's last scrape the Fail read"),
                       ("read_lag", "that scrape to the judgement"),
                       ("decision_after_judgement", "judgement to the rollback recorded"),
                       ("ready_to_decision", "**Ready to the rollback decision**"),
                       ("stopped_after_decision", "decision to the canary's last request")):
        lines.append(f"| {label} | {m.get(key)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cap", type=float, default=5, help="minutes a run may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--label", default="", help="what code this is (recorded in the JSON)")
    parser.add_argument("--interval", default=ANALYSIS["interval"], help="spec.analysis.interval (whole seconds)")
    args = parser.parse_args()
    cluster = connect()
    operator = OperatorProcess(cluster)
    operator.install()
    operator.start()
    floor = floor_orders(float(ANALYSIS["falseRollbackRate"]))
    cases: list[dict[str, Any]] = []
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "code": args.label,
                               "analysis": {**ANALYSIS, "interval": args.interval}, "cases": cases}
    try:
        for i in range(args.runs):
            try:
                case = run_case(cluster, floor, 60 * args.cap, args.interval)
            except Exception as exc:  # a run that breaks is reported, the others go on
                case = {"error": repr(exc)[:500]}
            cases.append(case)
            log(f"run {i + 1}: {json.dumps(case)[:400]}")
    finally:
        operator.stop()
    results["summary"] = summary(cases, floor)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "floor.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
