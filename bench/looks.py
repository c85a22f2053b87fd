"""bench/looks: does looking more often cost the false-rollback guarantee? (issue 15, close looks)

The operator judges a rollout once per analysis interval, and every 0.25 s on the interval under way as
well once a judge's evidence is within reach of its Fail (core/analysis/judgement.close_to_fail). Both are
looks at the same sequential statistic, whose false-Fail bound holds at any time it is read. This bench
checks that on simulated rollouts, in process, with the real judge (`guarded.core.analysis.judge`) and
bench/judges' traffic model (one canary pod against 9 stable pods, orders 5%, errors 0.5%, Poisson per
scrape): the same counts judged

* per interval (2 s), as the grid does, and
* at every scrape (1 s) with the interval under way appended as far as it was scraped: a superset of
  every close look the operator can make (it looks at most once per scrape's worth of new counts).

Canaries: healthy, and exactly at the tolerance (orders x0.8, errors x1.2: the edge of the null
hypothesis, where the bound is tight). Reports, per cell, the share of runs failed within the horizon
under each way of looking, against the spec's falseRollbackRate (0.01 by default, split over 2 metrics
x 2 judges); how many runs a grid look ever found within reach of a Fail (the operator's rule for looking
close: what close looks cost healthy rollouts); and, for orders -99%, the median scrape at which each way
fails.

`python bench/looks.py [--runs 1000] [--horizon 100]`; writes bench/results/looks.json and looks.md.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

# bench/judges' traffic model and judge configs, the same for both benches (bench/ is on the path of a script in it)
from judges import (
    ANALYSIS,
    CONFIGS,
    DT,
    ERROR_RATIO,
    ORDER_RATIO,
    PRE_ROLLOUT_SECONDS,
    RATES,
    RESULTS,
    STABLE_PODS,
)

from guarded.api.analysis import JudgementRecord, Verdict
from guarded.core.analysis import Counts, MetricData, judge
from guarded.core.analysis.judgement import CLOSE_REACH

SCRAPES = 2                   # scrapes per interval (1 s scrapes, 2 s interval)
SCENARIOS = {"healthy": (1.0, 1.0), "at tolerance (orders x0.8, errors x1.2)": (0.8, 1.2),
             "orders -99%": (0.01, 1.0)}


def within_reach(record: JudgementRecord, elapsed: float) -> bool:
    """core.analysis.close_to_fail's rule on one metric's judgement at a grid look `elapsed` s in."""
    pace_over = max(elapsed, 2 * DT)
    return any(e.log_threshold is not None and e.log_lr > 0
               and e.log_lr * (1 + CLOSE_REACH * DT / pace_over) >= e.log_threshold for e in record.evidence)


def run(args: tuple[int, str, float, int]) -> tuple[int | None, int | None, bool]:
    """One rollout: the first scrape (1-based) after which a grid look, and any look, fails (or None); and
    whether a grid look ever found a judge within reach of its Fail (the operator would then look close)."""
    seed, scenario, rate, horizon = args
    rng = np.random.default_rng(seed)
    order_mult, error_mult = SCENARIOS[scenario]
    n = horizon * SCRAPES
    nc = rng.poisson(rate * DT / SCRAPES, n)
    ns = rng.poisson(rate * DT / SCRAPES * STABLE_PODS, n)
    events = {"order-rate": (rng.binomial(nc, ORDER_RATIO * order_mult), rng.binomial(ns, ORDER_RATIO)),
              "error-rate": (rng.binomial(nc, min(ERROR_RATIO * error_mult, 1.0)), rng.binomial(ns, ERROR_RATIO))}
    pre_n = int(rng.poisson(rate * PRE_ROLLOUT_SECONDS * (STABLE_PODS + 1)))
    pre = {"order-rate": Counts(events=int(rng.binomial(pre_n, ORDER_RATIO)), requests=pre_n),
           "error-rate": Counts(events=int(rng.binomial(pre_n, ERROR_RATIO)), requests=pre_n)}
    grid_fail = any_fail = None
    close = False
    for k in range(1, n + 1):
        whole, part = divmod(k, SCRAPES)
        failed = False
        for name, (ev_c, ev_s) in events.items():
            canary, stable = [], []
            for i in range(whole + (1 if part else 0)):
                a, b = i * SCRAPES, min((i + 1) * SCRAPES, k)
                canary.append(Counts(events=float(ev_c[a:b].sum()), requests=float(nc[a:b].sum())))
                stable.append(Counts(events=float(ev_s[a:b].sum()), requests=float(ns[a:b].sum())))
            data = MetricData(canary=tuple(canary), stable=tuple(stable), pre_rollout=pre[name])
            record = judge(CONFIGS[name], data)
            if part == 0 and not close:
                close = within_reach(record, whole * DT)
            if record.verdict is Verdict.FAIL:
                failed = True
                break
        if failed and any_fail is None:
            any_fail = k
        if failed and part == 0 and grid_fail is None:
            grid_fail = k
        if grid_fail is not None:
            break
    return grid_fail, any_fail, close


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="runs per cell (healthy and at tolerance)")
    p.add_argument("--bad-runs", type=int, default=200, help="runs per orders -99%% cell")
    p.add_argument("--horizon", type=int, default=100, help="intervals per run (100: 200 s)")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "looks"))
    a = p.parse_args()
    began = time.time()
    cells = []
    with multiprocessing.Pool(a.jobs) as pool:
        for s, scenario in enumerate(SCENARIOS):
            for r, rate in enumerate(RATES):
                runs = a.bad_runs if scenario == "orders -99%" else a.runs
                tasks = [(a.seed * 1_000_003 + (s * len(RATES) + r) * 100_003 + i, scenario, rate, a.horizon)
                         for i in range(runs)]
                got = pool.map(run, tasks, chunksize=8)
                grid = [g for g, _, _ in got if g is not None]
                every = [x for _, x, _ in got if x is not None]
                cell = {"scenario": scenario, "rate": rate, "runs": runs,
                        "failed_grid_looks": len(grid), "failed_every_scrape": len(every),
                        "ever_within_reach": sum(c for _, _, c in got),
                        "rate_grid_looks": len(grid) / runs, "rate_every_scrape": len(every) / runs}
                if scenario == "orders -99%":
                    cell["median_scrape_grid"] = statistics.median(grid) if grid else None
                    cell["median_scrape_every"] = statistics.median(every) if every else None
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    result = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "seed": a.seed, "runs": a.runs,
              "horizon_seconds": a.horizon * DT, "false_rollback_rate": ANALYSIS.false_rollback_rate,
              "seconds": round(time.time() - began, 1), "cells": cells}
    Path(a.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# bench/looks", "", f"Run {result['generated']}: {a.runs} runs per healthy / at-tolerance cell, "
             f"{a.bad_runs} per orders -99% cell, {a.horizon * DT:.0f} s each, falseRollbackRate "
             f"{ANALYSIS.false_rollback_rate} (the default spec), the real judge.", "",
             "| canary | req/s per pod | failed, looks per 2 s interval | failed, looks at every 1 s scrape "
             "| runs ever within reach of a Fail (looked at closely) |",
             "|---|---|---|---|---|"]
    for c in cells:
        if c["scenario"] == "orders -99%":
            grid_s = c["median_scrape_grid"]
            every_s = c["median_scrape_every"]
            lines.append(f"| {c['scenario']} | {c['rate']} | {c['failed_grid_looks']}/{c['runs']}, median at "
                         f"{grid_s} s | {c['failed_every_scrape']}/{c['runs']}, median at {every_s} s | "
                         f"{c['ever_within_reach']}/{c['runs']} |")
        else:
            lines.append(f"| {c['scenario']} | {c['rate']} | {c['failed_grid_looks']}/{c['runs']} "
                         f"({c['rate_grid_looks']:.3%}) | {c['failed_every_scrape']}/{c['runs']} "
                         f"({c['rate_every_scrape']:.3%}) | {c['ever_within_reach']}/{c['runs']} |")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
