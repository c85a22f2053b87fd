"""bench/judges: our judge side by side with fixed-threshold judges, on thousands of simulated rollouts.

In process, on the pure core, no cluster. Per analysis interval (2 s) one canary pod and 9 stable pods
serve Poisson(R * 2 s) requests each (R = 5, 30, 300 req/s per pod); orders are Binomial(requests, 0.05)
and errors Binomial(requests, 0.005), the canary's ratio scaled by the scenario. The pre-rollout baseline
is 10 pods over the default 10 m window at the healthy ratios.

Judges, each judging both metrics (order rate and error rate) and rolling back on either:

* guarded: the real `guarded.core.analysis.judge` with the real `JudgeConfig`s that `judge_config` makes
  from a default `spec.analysis` (shortcuts requests + orders, interval 2s, every other field default:
  falseRollbackRate 0.01, split over 2 metrics x 2 judges). Called after every interval with all the
  intervals so far, as the engine does.
* fixed-defaults: a fixed-threshold judge as Argo Rollouts / Flagger analysis uses it: one measurement per
  5 m (150 intervals aggregated): canary ratio against stable ratio over that measurement; failed when the
  canary's order ratio < 0.8 x the stable's, or its error ratio > 1.25 x the stable's (any canary error
  when the stable had none); rollback at the 3rd failed measurement (failureLimit 3, counted Flagger-style:
  Argo's `failureLimit: 3` would abort at the 4th, so this favours the fixed judge).
* fixed-tuned: the same with a 30 s measurement (15 intervals) and rollback at the first failure.

Kayenta-style fixed-horizon Mann-Whitney judging is not modelled.

Run with `make bench-judges` (or `python bench/judges.py [--quick]`); writes bench/results/judges.json and
bench/results/judges.md. Deterministic from --seed. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from guarded.api.analysis import Analysis, Verdict
from guarded.core.analysis import Counts, MetricData, effective_metrics, judge, judge_config, power

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

DT = 2.0                      # analysis interval, seconds
STABLE_PODS = 9
ORDER_RATIO = 0.05
ERROR_RATIO = 0.005
PRE_ROLLOUT_SECONDS = 600.0   # spec.analysis.preRolloutWindow default (10m), 10 pods
RATES = (5, 30, 300)          # requests per second per pod
OURS_HORIZON = 150            # intervals (300 s) our judge is run for, at most
FIXED_HORIZON = 900           # intervals (1800 s) the fixed judges are run for
DETECT_HORIZON_S = 60.0

# scenario -> (order ratio multiplier, error ratio multiplier) on the canary
SCENARIOS = {
    "orders -99%": (0.01, 1.0), "orders -50%": (0.5, 1.0), "orders -30%": (0.7, 1.0),
    "orders -20%": (0.8, 1.0), "orders -10%": (0.9, 1.0),
    "errors x2": (1.0, 2.0), "errors x5": (1.0, 5.0), "errors x10": (1.0, 10.0),
    "healthy": (1.0, 1.0),
}
FIXED = {  # name -> (intervals per measurement, failures that roll back)
    "fixed-defaults (5m, failureLimit 3)": (150, 3),
    "fixed-tuned (30s, failureLimit 1)": (15, 1),
}
ORDERS_FAIL_BELOW, ERRORS_FAIL_ABOVE = 0.8, 1.25
OURS = "guarded (sequential LR, falseRollbackRate 0.01)"

ANALYSIS = Analysis(interval="2s", requests="http_requests_total", orders="orders_total")
CONFIGS = {m.name: judge_config(m, ANALYSIS) for m in effective_metrics(ANALYSIS)}


def simulate(rng: np.random.Generator, rate: float, order_mult: float, error_mult: float, steps: int) -> dict:
    """Per-interval counts for one rollout: canary (1 pod), stable (9 pods), and the pre-rollout baseline."""
    nc = rng.poisson(rate * DT, steps)
    ns = rng.poisson(rate * DT * STABLE_PODS, steps)
    pre_n = int(rng.poisson(rate * PRE_ROLLOUT_SECONDS * (STABLE_PODS + 1)))
    return {
        "nc": nc, "ns": ns,
        "oc": rng.binomial(nc, ORDER_RATIO * order_mult), "os": rng.binomial(ns, ORDER_RATIO),
        "ec": rng.binomial(nc, min(ERROR_RATIO * error_mult, 1.0)), "es": rng.binomial(ns, ERROR_RATIO),
        "pre": (pre_n, int(rng.binomial(pre_n, ORDER_RATIO)), int(rng.binomial(pre_n, ERROR_RATIO))),
    }


def ours(sim: dict, steps: int) -> int | None:
    """The first interval (0-based) after which the real judge fails either metric, or None."""
    pre_n, pre_o, pre_e = sim["pre"]
    series = {
        "order-rate": (sim["oc"], sim["os"], Counts(events=pre_o, requests=pre_n)),
        "error-rate": (sim["ec"], sim["es"], Counts(events=pre_e, requests=pre_n)),
    }
    canary = {name: [] for name in series}
    stable = {name: [] for name in series}
    for t in range(steps):
        for name, (ev_c, ev_s, pre) in series.items():
            canary[name].append(Counts(events=float(ev_c[t]), requests=float(sim["nc"][t])))
            stable[name].append(Counts(events=float(ev_s[t]), requests=float(sim["ns"][t])))
            data = MetricData(canary=tuple(canary[name]), stable=tuple(stable[name]), pre_rollout=pre)
            if judge(CONFIGS[name], data).verdict is Verdict.FAIL:
                return t
    return None


def fixed(sim: dict, per: int, limit: int, steps: int) -> int | None:
    """The last interval (0-based) of the measurement at which a fixed-threshold judge rolls back, or None."""
    m = steps // per

    def agg(x: np.ndarray) -> np.ndarray:
        return x[: m * per].reshape(m, per).sum(axis=1).astype(float)

    nc, ns, oc, os_, ec, es = (agg(sim[k]) for k in ("nc", "ns", "oc", "os", "ec", "es"))
    with np.errstate(divide="ignore", invalid="ignore"):
        rc_o, rs_o = np.where(nc > 0, oc / nc, np.nan), np.where(ns > 0, os_ / ns, np.nan)
        rc_e, rs_e = np.where(nc > 0, ec / nc, np.nan), np.where(ns > 0, es / ns, np.nan)
    failed = (rc_o < ORDERS_FAIL_BELOW * rs_o) | (rc_e > ERRORS_FAIL_ABOVE * rs_e)  # NaN compares False
    hits = np.flatnonzero(np.cumsum(failed) >= limit)
    return int((hits[0] + 1) * per - 1) if hits.size else None


# -- the demo's waves, with and without a required detectable degradation (spec.analysis.detect) -----------
# hack/demo.py: 10 pods at 30 req/s each, waves 1 pod, 20%, 50%, 100% (canary pods 1, 2, 5, 10), each baking
# 15 s, judged every 2 s with falseRollbackRate 0.001. A wave advances after its bake on a Pass (and, before
# the last wave, with spec.analysis.detect, once the evidence has the power); caught = rolled back before 100%.
DEMO_PODS, DEMO_RATE, DEMO_CANARY = 10, 30, (1, 2, 5, 10)
DEMO_BAKE = math.ceil(15 / DT)        # intervals: the bake is time under observation, whole intervals
WAVES_HORIZON = 900                   # intervals (30 min): a wave still holding then counts as held
DEMO = Analysis(interval="2s", requests="http_requests_total", orders="orders_total", false_rollback_rate=0.001)
DEMO_DETECT = Analysis(interval="2s", requests="http_requests_total", orders="orders_total",
                       false_rollback_rate=0.001, detect=[{"metric": "orders", "degradation": 0.2}])
WAVES_SETTINGS = {"demo waves": DEMO, "demo waves, detect orders -20% (power 0.95)": DEMO_DETECT}
WAVES_SCENARIOS = ("orders -30%", "healthy")


def waves_run(rng: np.random.Generator, analysis: Analysis, order_mult: float) -> tuple[str, float, int]:
    """One rollout over the demo's waves: (outcome, seconds, wave index it ended in). Outcomes: rolled back,
    promoted (the last wave reached), held (still before the last wave at the horizon)."""
    configs = {m.name: judge_config(m, analysis) for m in effective_metrics(analysis)}
    pre_n = int(rng.poisson(DEMO_RATE * PRE_ROLLOUT_SECONDS * DEMO_PODS))
    pre = {"order-rate": Counts(events=int(rng.binomial(pre_n, ORDER_RATIO)), requests=pre_n),
           "error-rate": Counts(events=int(rng.binomial(pre_n, ERROR_RATIO)), requests=pre_n)}
    ratios = {"order-rate": (ORDER_RATIO * order_mult, ORDER_RATIO), "error-rate": (ERROR_RATIO, ERROR_RATIO)}
    canary: dict[str, list] = {name: [] for name in configs}
    stable: dict[str, list] = {name: [] for name in configs}
    wave, in_wave = 0, 0
    for t in range(WAVES_HORIZON):
        pods = DEMO_CANARY[wave]
        nc, ns = int(rng.poisson(DEMO_RATE * DT * pods)), int(rng.poisson(DEMO_RATE * DT * (DEMO_PODS - pods)))
        passed, powered = True, True
        for name, cfg in configs.items():
            rc, rs = ratios[name]
            canary[name].append(Counts(events=float(rng.binomial(nc, rc)), requests=float(nc)))
            stable[name].append(Counts(events=float(rng.binomial(ns, rs)), requests=float(ns)))
            data = MetricData(canary=tuple(canary[name]), stable=tuple(stable[name]), pre_rollout=pre[name])
            verdict = judge(cfg, data).verdict
            if verdict is Verdict.FAIL:
                return "rolled back", (t + 1) * DT, wave
            passed = passed and verdict is Verdict.PASS
            if wave == len(DEMO_CANARY) - 2 and in_wave + 1 >= DEMO_BAKE and passed:
                record = power(cfg, data)
                powered = powered and (record is None or record.probability >= record.required)
        in_wave += 1
        if in_wave >= DEMO_BAKE and passed and powered:
            wave, in_wave = wave + 1, 0
            if wave == len(DEMO_CANARY) - 1:
                return "promoted", (t + 1) * DT, wave
    return "held", WAVES_HORIZON * DT, wave


def run_waves_chunk(task: tuple) -> dict:
    setting, scenario, n, seed = task
    rng = np.random.default_rng(seed)
    order_mult = SCENARIOS[scenario][0]
    return {"setting": setting, "scenario": scenario,
            "runs": [waves_run(rng, WAVES_SETTINGS[setting], order_mult) for _ in range(n)]}


def summarise_waves(setting: str, scenario: str, runs: list) -> dict:
    outcomes = [r[0] for r in runs]
    promoted_at = [r[1] for r in runs if r[0] == "promoted"]
    caught_at = [r[1] for r in runs if r[0] == "rolled back"]
    return {"setting": setting, "scenario": scenario, "runs": len(runs),
            "rolled_back_before_100": outcomes.count("rolled back"), "promoted": outcomes.count("promoted"),
            "held_at_horizon": outcomes.count("held"),
            "rollback_median_s": round(float(np.median(caught_at)), 1) if caught_at else None,
            "promotion_median_s": round(float(np.median(promoted_at)), 1) if promoted_at else None,
            "promotion_p90_s": round(float(np.percentile(promoted_at, 90)), 1) if promoted_at else None}


def run_chunk(task: tuple) -> dict:
    """Runs `n` rollouts of one (scenario, rate) cell for every judge; deterministic from the task's seed."""
    scenario, rate, n, seed = task
    order_mult, error_mult = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for _ in range(n):
        sim = simulate(rng, rate, order_mult, error_mult, FIXED_HORIZON)
        exp_o = sim["nc"] * ORDER_RATIO
        exp_e = sim["nc"] * ERROR_RATIO
        judged = {OURS: (ours(sim, OURS_HORIZON), OURS_HORIZON)}
        for name, (per, limit) in FIXED.items():
            judged[name] = (fixed(sim, per, limit, FIXED_HORIZON), FIXED_HORIZON)
        for name, (at, horizon) in judged.items():
            upto = (at + 1) if at is not None else horizon
            lost = float(exp_o[:upto].sum() - sim["oc"][:upto].sum())
            extra = float(sim["ec"][:upto].sum() - exp_e[:upto].sum())
            out.setdefault(name, []).append(
                (None if at is None else (at + 1) * DT, lost, extra))
    return {"scenario": scenario, "rate": rate, "runs": out}


def kl_floor(alpha: float, rate: float, rho1: float = 0.01, rho0: float = 0.8) -> dict:
    """The information floor for orders -99%: expected reference-rate canary orders (and seconds at one
    canary pod's order rate) a test at level alpha needs, ln(1/alpha) / KL, KL per expected event
    = rho1 ln(rho1/rho0) - rho1 + rho0 (Poisson at rho1 against Poisson at rho0)."""
    kl = rho1 * math.log(rho1 / rho0) - rho1 + rho0
    events = math.log(1 / alpha) / kl
    return {"alpha": alpha, "kl_per_event": round(kl, 4), "events": round(events, 2),
            "seconds": round(events / (rate * ORDER_RATIO), 2)}


def _pct(values: list[float], q: float) -> float | None:
    """A percentile of detection times where None (not detected in the horizon) counts as +infinity."""
    xs = sorted(math.inf if v is None else v for v in values)
    x = float(np.percentile(xs, q, method="inverted_cdf")) if xs else math.nan
    return None if math.isinf(x) else round(x, 2)


def summarise(runs: list, horizon_s: float) -> dict:
    times = [r[0] for r in runs]
    detected = [t for t in times if t is not None]
    return {
        "runs": len(runs), "horizon_s": horizon_s, "detected": len(detected),
        "detect_median_s": _pct(times, 50), "detect_p90_s": _pct(times, 90),
        "p_detect_60s": round(sum(t <= DETECT_HORIZON_S for t in detected) / len(runs), 4),
        "orders_lost_median": round(float(np.median([r[1] for r in runs])), 1),
        "orders_lost_p90": round(float(np.percentile([r[1] for r in runs], 90)), 1),
        "extra_errors_median": round(float(np.median([r[2] for r in runs])), 1),
        "false_rollbacks_300s": sum(t is not None and t <= 300 for t in times),
        "false_rollbacks": len(detected),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer runs (under 2 minutes)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--bad-runs", type=int, default=None)
    p.add_argument("--healthy-runs", type=int, default=None)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--waves-runs", type=int, default=None, help="runs per demo-waves cell (default 200, 30 quick)")
    p.add_argument("--only", choices=("waves",), help="run only the demo-waves cells (bench/results/judges-waves.*)")
    args = p.parse_args()
    bad_runs = args.bad_runs or (30 if args.quick else 200)
    healthy_runs = args.healthy_runs or (100 if args.quick else 1000)
    waves_runs = args.waves_runs or (30 if args.quick else 200)
    chunk = 25
    if args.only == "waves":
        result = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "seed": args.seed, "jobs": args.jobs,
                  **waves_cells(args.seed, waves_runs, args.jobs)}
        (RESULTS / "judges-waves.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "judges-waves.md").write_text("# bench/judges: the demo's waves\n\n" + waves_markdown(result))
        print(waves_markdown(result))
        return 0

    tasks = []
    seeds = np.random.SeedSequence(args.seed)
    for scenario in SCENARIOS:
        for rate in RATES:
            n = healthy_runs if scenario == "healthy" else bad_runs
            for start in range(0, n, chunk):
                tasks.append((scenario, rate, min(chunk, n - start)))
    children = seeds.spawn(len(tasks))
    tasks = [(*t, int(c.generate_state(1)[0])) for t, c in zip(tasks, children, strict=True)]

    started = time.monotonic()
    with multiprocessing.Pool(args.jobs) as pool:
        chunks = pool.map(run_chunk, tasks, chunksize=1)
    elapsed = time.monotonic() - started

    cells: dict = {}
    for c in chunks:
        for name, runs in c["runs"].items():
            cells.setdefault((c["scenario"], c["rate"], name), []).extend(runs)
    rows = []
    for (scenario, rate, name), runs in cells.items():
        horizon = (OURS_HORIZON if name == OURS else FIXED_HORIZON) * DT
        rows.append({"scenario": scenario, "rate": rate, "judge": name, **summarise(runs, horizon)})

    alpha_test = CONFIGS["order-rate"].alpha
    waves = waves_cells(args.seed, waves_runs, args.jobs)
    result = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "seed": args.seed, "jobs": args.jobs,
        "runtime_s": round(elapsed, 1), "python": platform.python_version(),
        "model": {"interval_s": DT, "stable_pods": STABLE_PODS, "canary_pods": 1, "order_ratio": ORDER_RATIO,
                  "error_ratio": ERROR_RATIO, "pre_rollout_s": PRE_ROLLOUT_SECONDS, "rates": RATES,
                  "ours_horizon_s": OURS_HORIZON * DT, "fixed_horizon_s": FIXED_HORIZON * DT,
                  "judge_configs": {k: repr(v) for k, v in CONFIGS.items()},
                  "fixed": {k: {"intervals": v[0], "failure_limit": v[1]} for k, v in FIXED.items()},
                  "fixed_thresholds": {"orders_fail_below": ORDERS_FAIL_BELOW, "errors_fail_above": ERRORS_FAIL_ABOVE},
                  "bad_runs": bad_runs, "healthy_runs": healthy_runs},
        "floor_orders_99pct": {str(r): {"per_test_alpha": kl_floor(alpha_test, r),
                                        "rollout_alpha": kl_floor(ANALYSIS.false_rollback_rate, r)}
                               for r in RATES},
        "cells": rows,
        **waves,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "judges.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "judges.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def waves_cells(seed: int, runs: int, jobs: int) -> dict:
    """The demo-waves cells: each (setting, scenario) over `runs` rollouts, deterministic from the seed."""
    tasks = [(setting, scenario, min(10, runs - start))
             for setting in WAVES_SETTINGS for scenario in WAVES_SCENARIOS for start in range(0, runs, 10)]
    children = np.random.SeedSequence([seed, 1]).spawn(len(tasks))
    tasks = [(*t, int(c.generate_state(1)[0])) for t, c in zip(tasks, children, strict=True)]
    started = time.monotonic()
    with multiprocessing.Pool(jobs) as pool:
        chunks = pool.map(run_waves_chunk, tasks, chunksize=1)
    cells: dict = {}
    for c in chunks:
        cells.setdefault((c["setting"], c["scenario"]), []).extend(c["runs"])
    return {"waves_runtime_s": round(time.monotonic() - started, 1),
            "waves_model": {"pods": DEMO_PODS, "rate": DEMO_RATE, "canary_pods": DEMO_CANARY,
                            "bake_intervals": DEMO_BAKE, "horizon_s": WAVES_HORIZON * DT,
                            "false_rollback_rate": DEMO.false_rollback_rate},
            "waves_cells": [summarise_waves(s, sc, r) for (s, sc), r in cells.items()]}


def waves_markdown(r: dict) -> str:
    m = r["waves_model"]
    lines = [f"The demo's waves: {m['pods']} pods at {m['rate']} req/s each, canary pods {list(m['canary_pods'])}, "
             f"each wave baking {m['bake_intervals']} intervals of {DT:g} s, falseRollbackRate "
             f"{m['false_rollback_rate']}; a rollout still before 100% after {m['horizon_s']:g} s counts as held "
             f"({r['waves_runtime_s']} s).", "",
             "| setting | scenario | runs | rolled back before 100% | promoted to 100% | held | rollback median (s) "
             "| promotion median (s) | promotion p90 (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for c in r["waves_cells"]:
        lines.append(f"| {c['setting']} | {c['scenario']} | {c['runs']} | {c['rolled_back_before_100']} "
                     f"({c['rolled_back_before_100'] / c['runs']:.3f}) | {c['promoted']} | {c['held_at_horizon']} | "
                     f"{c['rollback_median_s']} | {c['promotion_median_s']} | {c['promotion_p90_s']} |")
    return "\n".join(lines) + "\n"


def _fmt(x: float | None, horizon: float) -> str:
    return f"> {horizon:g}" if x is None else f"{x:g}"


def markdown(r: dict) -> str:
    m = r["model"]
    lines = [
        "# bench/judges", "",
        f"Run {r['generated']} ({r['mode']} mode, seed {r['seed']}, {r['jobs']} processes, {r['runtime_s']} s). "
        f"Simulated, in process, no cluster: 1 canary pod + {m['stable_pods']} stable pods, Poisson requests at "
        f"R req/s per pod, order ratio {m['order_ratio']}, error ratio {m['error_ratio']}, judged every "
        f"{m['interval_s']:g} s. {m['bad_runs']} runs per bad cell, {m['healthy_runs']} per healthy cell, "
        f"per judge. Our judge is run for at most {m['ours_horizon_s']:g} s, the fixed ones for "
        f"{m['fixed_horizon_s']:g} s; '> H' means not reached within that horizon H.", "",
        "## Bad releases", "",
        "| scenario | R | judge | detected | detect median (s) | detect p90 (s) | P(detect <= 60 s) "
        "| orders lost median | orders lost p90 | extra errors median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cells"]:
        if c["scenario"] == "healthy":
            continue
        lines.append(f"| {c['scenario']} | {c['rate']} | {c['judge']} | {c['detected']}/{c['runs']} | "
                     f"{_fmt(c['detect_median_s'], c['horizon_s'])} | {_fmt(c['detect_p90_s'], c['horizon_s'])} | "
                     f"{c['p_detect_60s']:.3f} | {c['orders_lost_median']:g} | {c['orders_lost_p90']:g} | "
                     f"{c['extra_errors_median']:g} |")
    lines += ["", "## Healthy releases: false rollbacks", "",
              "| R | judge | runs | rolled back within 300 s | rolled back within horizon | horizon (s) |",
              "|---|---|---|---|---|---|"]
    for c in r["cells"]:
        if c["scenario"] != "healthy":
            continue
        lines.append(f"| {c['rate']} | {c['judge']} | {c['runs']} | {c['false_rollbacks_300s']} "
                     f"({c['false_rollbacks_300s'] / c['runs']:.4f}) | {c['false_rollbacks']} "
                     f"({c['false_rollbacks'] / c['runs']:.4f}) | {c['horizon_s']:g} |")
    lines += ["", "## Information floor, orders -99% (rho1 0.01 against rho0 0.8)", "",
              "| R | alpha | KL per expected order | expected orders needed | seconds at one canary pod |",
              "|---|---|---|---|---|"]
    for rate, f in r["floor_orders_99pct"].items():
        for v in (f["per_test_alpha"], f["rollout_alpha"]):
            lines.append(f"| {rate} | {v['alpha']:g} | {v['kl_per_event']:g} | {v['events']:g} | {v['seconds']:g} |")
    if r.get("waves_cells"):
        lines += ["", "## The demo's waves: caught before 100%, with and without spec.analysis.detect", "",
                  waves_markdown(r)]
    lines += ["", "Detection time counts from the canary's first interval to the end of the interval whose "
              "judgement fails (no scrape lag, no query alignment). Orders lost = expected canary orders at the "
              "baseline ratio minus actual, until detection (or over the horizon when not detected). "
              "See docs/judges.md.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
