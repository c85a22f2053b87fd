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
* kayenta-defaults, kayenta-tuned: Kayenta's NetflixACAJudge (Spinnaker's automated canary analysis) on the
  same counts: per metric, one data point per step (the canary's ratio and the stable's), compared by the
  Mann-Whitney confidence interval for the shift at confidence 0.98 with tolerance 0.25 and IQR outlier
  removal; score = share of metrics classified Pass; rolled back at a judgement scoring below 75 (marginal),
  or below 95 (pass) at the last. Judged over a growing window: every 10 m with a 60 s step (Kayenta's default
  step), or every 1 m with a 10 s step.
* fixed-calibrated, kayenta-calibrated: fixed-tuned and kayenta-tuned with their thresholds (ratio
  thresholds; confidence level) set per rate on the healthy runs to a false-rollback rate of 0.01 within
  300 s, the rate our judge is given: the issue's "tuned to the same false-rollback rate".
* fixed-at-tolerance: fixed-calibrated with its thresholds set on canaries exactly at the tolerance (orders
  x0.8, errors x1.2) instead: the same rate over the same null hypothesis as our judge's bound.

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
from statistics import NormalDist

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
PROMOTE_AFTER_S = 300.0       # "caught before 100%": a plan that goes to 100% after a 5-minute canary

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
    canary: dict[str, list] = {name: [] for name in series}
    stable: dict[str, list] = {name: [] for name in series}
    for t in range(steps):
        for name, (ev_c, ev_s, pre) in series.items():
            canary[name].append(Counts(events=float(ev_c[t]), requests=float(sim["nc"][t])))
            stable[name].append(Counts(events=float(ev_s[t]), requests=float(sim["ns"][t])))
            data = MetricData(canary=tuple(canary[name]), stable=tuple(stable[name]), pre_rollout=pre)
            if judge(CONFIGS[name], data).verdict is Verdict.FAIL:
                return t
    return None


def fixed_stats(sim: dict, per: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per measurement of `per` intervals: the canary's order ratio over the stable's, and its error ratio
    over the stable's (inf when only the canary had errors; NaN, which never fails, without events or
    requests on either side)."""
    m = steps // per

    def agg(x: np.ndarray) -> np.ndarray:
        return x[: m * per].reshape(m, per).sum(axis=1).astype(float)

    def relative(ec: np.ndarray, es: np.ndarray, nc: np.ndarray, ns: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            rc, rs = np.where(nc > 0, ec / nc, np.nan), np.where(ns > 0, es / ns, np.nan)
            return np.where(rs > 0, rc / rs, np.where(rc > 0, np.inf, np.nan))

    nc, ns = agg(sim["nc"]), agg(sim["ns"])
    return relative(agg(sim["oc"]), agg(sim["os"]), nc, ns), relative(agg(sim["ec"]), agg(sim["es"]), nc, ns)


def fixed(sim: dict, per: int, limit: int, steps: int, below: float = ORDERS_FAIL_BELOW,
          above: float = ERRORS_FAIL_ABOVE) -> int | None:
    """The last interval (0-based) of the measurement at which a fixed-threshold judge rolls back, or None:
    a measurement fails when the canary's order ratio is below `below` x the stable's or its error ratio
    above `above` x the stable's."""
    orders, errors = fixed_stats(sim, per, steps)
    failed = (orders < below) | (errors > above)  # NaN compares False
    hits = np.flatnonzero(np.cumsum(failed) >= limit)
    return int((hits[0] + 1) * per - 1) if hits.size else None


# -- a Kayenta-style judge: NetflixACAJudge's Mann-Whitney classification, in numpy --------------------------
# Kayenta (spinnaker/kayenta, kayenta-judge and kayenta-mannwhitney) classifies each metric by comparing the
# canary's data points with the control's: the asymptotic confidence interval of R's wilcox.test for the
# location shift (normal approximation with tie and continuity correction), at confLevel 0.98 as
# NetflixACAJudge sets it; the metric is High when the interval's lower bound exceeds tolerance (0.25) x
# |Hodges-Lehmann estimate|, Low when its upper bound is below minus that, and only when the mean ratio
# canary / control points the same way (effect size thresholds 1.0, 1.0); the direction a metric may fail in
# is configured per metric. The score is the share of metrics classified Pass (x 100); a judgement below the
# marginal threshold fails the canary, and the last one must reach the pass threshold.
KAYENTA_TOLERANCE = 0.25
KAYENTA_IQR_FACTOR = 3.0            # NetflixACAJudge's IQRDetector(factor = 3.0) removes outliers first
KAYENTA_MARGINAL, KAYENTA_PASS = 75.0, 95.0
KAYENTA = {  # name -> (intervals per data point (Kayenta's step), intervals per judgement, confidence level)
    "kayenta-defaults (step 60s, judged every 10m, 98%)": (30, 300, 0.98),
    "kayenta-tuned (step 10s, judged every 1m, 98%)": (5, 30, 0.98),
}
DIRECTIONS = ("decrease", "increase")  # order-rate fails Low, error-rate fails High


def average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n, ties given their average rank (R's rank()), and the sizes of the groups of ties."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse], counts


def wilcoxon_z(x: np.ndarray, y: np.ndarray, mu: float = 0.0) -> float:
    """The normal approximation of the rank-sum statistic of x - mu against y, as R's wilcox.test computes it
    for a two-sided test without exact p-values: the centred rank sum of x, continuity-corrected by 0.5
    towards 0, over its standard deviation with the tie correction. It decreases as mu grows; the confidence
    bounds for the shift are where it crosses +-z."""
    nx, ny = len(x), len(y)
    ranks, ties = average_ranks(np.concatenate([np.asarray(x, float) - mu, np.asarray(y, float)]))
    dz = float(ranks[:nx].sum()) - nx * (nx + 1) / 2 - nx * ny / 2
    n = nx + ny
    sigma = math.sqrt(nx * ny / 12 * ((n + 1) - float((ties ** 3 - ties).sum()) / (n * (n - 1))))
    if sigma == 0:
        raise ValueError("every observation is tied")
    return (dz - math.copysign(0.5, dz) * (dz != 0)) / sigma


def mann_whitney(x: np.ndarray, y: np.ndarray) -> dict:
    """The Mann-Whitney U of x against y, its normal approximation z and the two-sided p-value
    (R: wilcox.test(x, y, exact = FALSE), whose W is this U)."""
    nx = len(x)
    ranks, _ = average_ranks(np.concatenate([np.asarray(x, float), np.asarray(y, float)]))
    u = float(ranks[:nx].sum()) - nx * (nx + 1) / 2
    z = wilcoxon_z(x, y)
    return {"u": u, "z": z, "p": min(1.0, math.erfc(abs(z) / math.sqrt(2)))}


def hodges_lehmann(x: np.ndarray, y: np.ndarray) -> float:
    """The Hodges-Lehmann estimate of the shift of x against y: the median of all differences x_i - y_j."""
    return float(np.median(np.subtract.outer(np.asarray(x, float), np.asarray(y, float))))


def shift_interval(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float]:
    """The asymptotic confidence interval for the shift of x against y, as R's wilcox.test(conf.int = TRUE)
    and Kayenta's MannWhitney compute it: the shifts where wilcoxon_z crosses +-z, or the extreme shifts
    min(x) - max(y) and max(x) - min(y) when it does not cross inside them. Bisection instead of a Brent
    solver: the function is a step function, and both find its jump."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    lo, hi = float(np.min(x) - np.max(y)), float(np.max(x) - np.min(y))

    def root(q: float) -> float:
        if wilcoxon_z(x, y, lo) - q <= 0:
            return lo
        if wilcoxon_z(x, y, hi) - q >= 0:
            return hi
        a, b = lo, hi
        for _ in range(200):
            m = (a + b) / 2
            a, b = (m, b) if wilcoxon_z(x, y, m) - q > 0 else (a, m)
            if b - a <= 1e-12 * max(1.0, abs(a)):
                break
        return (a + b) / 2

    return root(z), root(-z)


def outliers_removed(values: np.ndarray, factor: float = KAYENTA_IQR_FACTOR) -> np.ndarray:
    """Values without NaNs and outside Tukey's fences Q1 - factor IQR, Q3 + factor IQR (NetflixACAJudge's
    IQRDetector, factor 3). With an IQR of 0 nothing is removed (our reading of its reduceSensitivity)."""
    v = values[~np.isnan(values)]
    if v.size < 4:
        return v
    q1, q3 = np.percentile(v, [25, 75])
    if q3 == q1:
        return v
    return v[(v >= q1 - factor * (q3 - q1)) & (v <= q3 + factor * (q3 - q1))]


def _degenerate(x: np.ndarray, y: np.ndarray, direction: str) -> bool:
    """Kayenta's Pass before any test: no data, identical samples, a single distinct value, or a mean ratio
    pointing the other way (effect size thresholds 1.0: High needs mean(canary) >= mean(control))."""
    if x.size == 0 or y.size == 0 or np.array_equal(np.sort(x), np.sort(y)):
        return True
    if np.unique(np.concatenate([x, y])).size == 1:
        return True
    control_mean = float(y.mean())
    if control_mean == 0:
        return False
    ratio = float(x.mean()) / control_mean
    return ratio < 1.0 if direction == "increase" else ratio > 1.0


def kayenta_classify(canary: np.ndarray, control: np.ndarray, direction: str, confidence: float,
                     tolerance: float = KAYENTA_TOLERANCE) -> str:
    """NetflixACAJudge's classification of one metric, High, Low or Pass, from the confidence interval.
    The bench uses kayenta_strength, which gives the same answer for every confidence level at once
    (tests/unit/test_bench_judges.py checks they agree)."""
    x, y = outliers_removed(canary), outliers_removed(control)
    if _degenerate(x, y, direction):
        return "Pass"
    bound = tolerance * abs(hodges_lehmann(x, y))
    lower, upper = shift_interval(x, y, confidence)
    if direction == "increase" and lower > bound:
        return "High"
    if direction == "decrease" and upper < -bound:
        return "Low"
    return "Pass"


def kayenta_strength(canary: np.ndarray, control: np.ndarray, direction: str,
                     tolerance: float = KAYENTA_TOLERANCE) -> float:
    """The largest z at which kayenta_classify calls the metric High (direction increase) or Low (decrease):
    it fails at confidence level c exactly when this exceeds z_c = Phi^-1(1 - (1 - c) / 2). Because
    wilcoxon_z decreases in the shift, the interval's lower bound lies above the bound b exactly when
    wilcoxon_z(b) > z_c (and the upper bound below -b when wilcoxon_z(-b) < -z_c)."""
    x, y = outliers_removed(canary), outliers_removed(control)
    if _degenerate(x, y, direction):
        return -math.inf
    bound = tolerance * abs(hodges_lehmann(x, y))
    if direction == "increase":
        # the interval's endpoint rule: a lower bound of min(x) - max(y) above b is High at any level
        return math.inf if float(np.min(x) - np.max(y)) > bound else wilcoxon_z(x, y, bound)
    return math.inf if float(np.max(x) - np.min(y)) < -bound else -wilcoxon_z(x, y, -bound)


def step_ratios(events: np.ndarray, requests: np.ndarray, per: int) -> np.ndarray:
    """One data point per `per` intervals, as a range query with that step returns it: events / requests
    over the step (NaN without requests)."""
    m = len(events) // per
    e = events[: m * per].reshape(m, per).sum(axis=1).astype(float)
    n = requests[: m * per].reshape(m, per).sum(axis=1).astype(float)
    return np.where(n > 0, e / np.maximum(n, 1.0), np.nan)


def kayenta_strengths(sim: dict, per: int, every: int, steps: int) -> np.ndarray:
    """kayenta_strength of order-rate and error-rate at every judgement (looks x 2): judgement k sees the
    data points of the whole canary so far (Kayenta's growing window), k x `every` intervals."""
    series = [(step_ratios(sim["oc"], sim["nc"], per), step_ratios(sim["os"], sim["ns"], per)),
              (step_ratios(sim["ec"], sim["nc"], per), step_ratios(sim["es"], sim["ns"], per))]
    looks = steps // every
    out = np.empty((looks, 2))
    for k in range(looks):
        points = (k + 1) * every // per
        for j, ((canary, control), direction) in enumerate(zip(series, DIRECTIONS, strict=True)):
            out[k, j] = kayenta_strength(canary[:points], control[:points], direction)
    return out


def kayenta_rollback(strengths: np.ndarray, z: float | np.ndarray) -> int | None:
    """The first judgement (0-based) at which the score (share of metrics classified Pass, x 100) is below
    the marginal threshold, or the last judgement's below the pass threshold; None when it passes."""
    score = 100.0 * (1.0 - (strengths > z).mean(axis=1))
    failed = score < KAYENTA_MARGINAL
    failed[-1] |= score[-1] < KAYENTA_PASS
    hits = np.flatnonzero(failed)
    return int(hits[0]) if hits.size else None


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
    """Runs `n` rollouts of one (scenario, rate) cell for every judge; deterministic from the task's seed.
    For the calibrated judges, whose thresholds come from the healthy runs of all chunks, it returns each
    run's statistics per measurement and judgement instead ("raw"), with the orders lost and extra errors
    up to the end of every measurement."""
    scenario, rate, n, seed = task
    order_mult, error_mult = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    raw: list[dict] = []
    for _ in range(n):
        sim = simulate(rng, rate, order_mult, error_mult, FIXED_HORIZON)
        exp_o = sim["nc"] * ORDER_RATIO
        exp_e = sim["nc"] * ERROR_RATIO
        judged = {OURS: (ours(sim, OURS_HORIZON), OURS_HORIZON)}
        for name, (per, limit) in FIXED.items():
            judged[name] = (fixed(sim, per, limit, FIXED_HORIZON), FIXED_HORIZON)
        strengths = {}
        for name, (per, every, confidence) in KAYENTA.items():
            strengths[per, every] = kayenta_strengths(sim, per, every, FIXED_HORIZON)
            look = kayenta_rollback(strengths[per, every], _z(confidence))
            judged[name] = (None if look is None else (look + 1) * every - 1, FIXED_HORIZON)
        for name, (at, horizon) in judged.items():
            upto = (at + 1) if at is not None else horizon
            lost = float(exp_o[:upto].sum() - sim["oc"][:upto].sum())
            extra = float(sim["ec"][:upto].sum() - exp_e[:upto].sum())
            out.setdefault(name, []).append(
                (None if at is None else (at + 1) * DT, lost, extra))
        ends = slice(CAL_PER - 1, FIXED_HORIZON, CAL_PER)
        raw.append({"fixed": fixed_stats(sim, CAL_PER, FIXED_HORIZON), "kayenta": strengths[CAL_KAYENTA],
                    "lost": np.cumsum(exp_o - sim["oc"])[ends], "extra": np.cumsum(sim["ec"] - exp_e)[ends]})
    return {"scenario": scenario, "rate": rate, "runs": out, "raw": raw}


# -- the calibrated judges: thresholds set on the healthy runs to the false-rollback rate we promise ---------
# The bar: detection at least as fast as a fixed-threshold judge tuned to the same false-rollback
# rate. Per rate, on the healthy runs, each metric's threshold is set so that at most CAL_FRR / 2 of them
# would have been rolled back by it within CAL_HORIZON (our judge's horizon), so at most CAL_FRR in all:
# fixed-tuned's two ratio thresholds, and kayenta-tuned's confidence level per metric. Our judge is given
# 0.01 and measured well below it; calibrating the others to 0.01 (rather than to our measured rate, which
# 1000 runs cannot resolve) lets them roll back more healthy releases than ours, in their favour.
CAL_FRR = ANALYSIS.false_rollback_rate
CAL_HORIZON = OURS_HORIZON
CAL_PER = 15                             # fixed-calibrated: fixed-tuned's 30 s measurement, failureLimit 1
CAL_KAYENTA = (5, 30)                    # kayenta-calibrated: kayenta-tuned's step and judgement interval
FIXED_CAL = "fixed-calibrated (30s, failureLimit 1, thresholds at FRR 0.01)"
KAYENTA_CAL = "kayenta-calibrated (step 10s, judged every 1m, confidence at FRR 0.01)"


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _kth(values: list[float], k: int, *, largest: bool) -> float:
    """The (k+1)-th smallest (or largest) value: at most k values lie strictly beyond it."""
    ordered = sorted(values, reverse=largest)
    return float(ordered[min(k, len(ordered) - 1)])


def calibrate(healthy: list[dict]) -> dict:
    """Thresholds for the calibrated judges from one rate's healthy runs (see CAL_FRR)."""
    k = math.floor(len(healthy) * CAL_FRR / 2)
    measurements, looks = CAL_HORIZON // CAL_PER, CAL_HORIZON // CAL_KAYENTA[1]

    def lowest(v: np.ndarray) -> float:
        x = np.fmin.reduce(v[:measurements])
        return math.inf if math.isnan(x) else float(x)

    def highest(v: np.ndarray) -> float:
        x = np.fmax.reduce(v[:measurements])
        return -math.inf if math.isnan(x) else float(x)

    def kayenta(metric: int) -> tuple[int, float]:
        # Kayenta's interval never reaches beyond the extreme shifts, so a look where every canary point lies
        # beyond every control point fails at any confidence level: when more healthy runs than the budget
        # do that, no confidence level is enough, and the judgement starts at a later look instead.
        for first in range(looks):
            z = _kth([float(r["kayenta"][first:looks, metric].max()) for r in healthy], k, largest=True)
            if math.isfinite(z):
                return first, z
        return looks, math.inf

    (first_orders, z_orders), (first_errors, z_errors) = kayenta(0), kayenta(1)
    return {"runs": len(healthy), "rolled_back_per_metric_at_most": k,
            "fixed_orders_below": _kth([lowest(r["fixed"][0]) for r in healthy], k, largest=False),
            "fixed_errors_above": _kth([highest(r["fixed"][1]) for r in healthy], k, largest=True),
            "kayenta_z": [z_orders, z_errors], "kayenta_first_look": [first_orders, first_errors],
            "kayenta_confidence": [round(2 * NormalDist().cdf(z) - 1, 6) if math.isfinite(z) else None
                                   for z in (z_orders, z_errors)]}


def calibrated_runs(raw: list[dict], cal: dict) -> dict[str, list]:
    """(detection time or None, orders lost, extra errors) of every run for both calibrated judges."""
    out: dict[str, list] = {FIXED_CAL: [], KAYENTA_CAL: []}
    z = np.array(cal["kayenta_z"])
    for r in raw:
        orders, errors = r["fixed"]
        hits = np.flatnonzero((orders < cal["fixed_orders_below"]) | (errors > cal["fixed_errors_above"]))
        strengths = r["kayenta"].copy()
        for metric, first in enumerate(cal["kayenta_first_look"]):
            strengths[:first, metric] = -math.inf
        look = kayenta_rollback(strengths, z)
        ends = {FIXED_CAL: None if not hits.size else int(hits[0]),
                KAYENTA_CAL: None if look is None else (look + 1) * CAL_KAYENTA[1] // CAL_PER - 1}
        for name, end in ends.items():
            at = None if end is None else (end + 1) * CAL_PER * DT
            out[name].append((at, float(r["lost"][-1 if end is None else end]),
                              float(r["extra"][-1 if end is None else end])))
    return out



# -- fixed-at-tolerance: the calibrated fixed judge, calibrated on the edge of "not degraded" ----------------
# Our judge's false-rollback bound holds for every canary that is not degraded by the spec's definition, up to
# the tolerance (orders down to -20%, errors up to x1.2), not only for the healthy ones: rolling back such a
# release is a false rollback too. This judge is fixed-calibrated with its thresholds set the same way, but on
# canaries exactly at the tolerance (orders x0.8 and errors x1.2 in the same run; the two are independent).
# It needs no call of our judge, so its runs are cheap: the bad and healthy runs are simulated again from the
# main run's seeds (the same rollouts), the boundary runs from their own.
BOUNDARY = (1 - (CONFIGS["order-rate"].stable_tolerance or 0.0), 1 + (CONFIGS["error-rate"].stable_tolerance or 0.0))
FIXED_TOL = "fixed-at-tolerance (30s, failureLimit 1, FRR 0.01 at orders -20% / errors x1.2)"
JUDGES = (OURS, *FIXED, FIXED_CAL, FIXED_TOL, *KAYENTA, KAYENTA_CAL)


def fixed_runs_chunk(task: tuple) -> dict:
    """fixed_stats and cumulative losses of `n` rollouts of one cell, as run_chunk simulates them."""
    scenario, rate, n, seed = task
    order_mult, error_mult = BOUNDARY if scenario == "at tolerance" else SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    raw = []
    ends = slice(CAL_PER - 1, FIXED_HORIZON, CAL_PER)
    for _ in range(n):
        sim = simulate(rng, rate, order_mult, error_mult, FIXED_HORIZON)
        raw.append({"fixed": fixed_stats(sim, CAL_PER, FIXED_HORIZON),
                    "lost": np.cumsum(sim["nc"] * ORDER_RATIO - sim["oc"])[ends],
                    "extra": np.cumsum(sim["ec"] - sim["nc"] * ERROR_RATIO)[ends]})
    return {"scenario": scenario, "rate": rate, "raw": raw}


def fixed_thresholds(runs: list[dict]) -> dict:
    """fixed-calibrated's thresholds from `runs` (at most CAL_FRR / 2 of them rolled back per metric within
    CAL_HORIZON)."""
    k = math.floor(len(runs) * CAL_FRR / 2)
    measurements = CAL_HORIZON // CAL_PER
    lowest = [np.fmin.reduce(r["fixed"][0][:measurements]) for r in runs]
    highest = [np.fmax.reduce(r["fixed"][1][:measurements]) for r in runs]
    return {"runs": len(runs), "rolled_back_per_metric_at_most": k,
            "fixed_orders_below": _kth([math.inf if math.isnan(x) else float(x) for x in lowest], k, largest=False),
            "fixed_errors_above": _kth([-math.inf if math.isnan(x) else float(x) for x in highest], k, largest=True)}


def tolerance_cells(seed: int, bad_runs: int, healthy_runs: int, jobs: int) -> tuple[dict, dict]:
    """fixed-at-tolerance's runs per (scenario, rate), and its thresholds per rate."""
    boundary = [("at tolerance", rate, min(25, healthy_runs - start)) for rate in RATES
                for start in range(0, healthy_runs, 25)]
    children = np.random.SeedSequence([seed, 2]).spawn(len(boundary))
    tasks = cell_tasks(seed, bad_runs, healthy_runs) + [
        (*t, int(c.generate_state(1)[0])) for t, c in zip(boundary, children, strict=True)]
    with multiprocessing.Pool(jobs) as pool:
        chunks = pool.map(fixed_runs_chunk, tasks, chunksize=4)
    raw: dict = {}
    for c in chunks:
        raw.setdefault((c["scenario"], c["rate"]), []).extend(c["raw"])
    cells, thresholds = {}, {}
    for rate in RATES:
        t = thresholds[str(rate)] = fixed_thresholds(raw["at tolerance", rate])
        for scenario in SCENARIOS:
            runs = []
            for r in raw[scenario, rate]:
                orders, errors = r["fixed"]
                hits = np.flatnonzero((orders < t["fixed_orders_below"]) | (errors > t["fixed_errors_above"]))
                end = int(hits[0]) if hits.size else None
                runs.append((None if end is None else (end + 1) * CAL_PER * DT,
                             float(r["lost"][-1 if end is None else end]),
                             float(r["extra"][-1 if end is None else end])))
            cells[scenario, rate, FIXED_TOL] = runs
    return cells, thresholds


def cell_tasks(seed: int, bad_runs: int, healthy_runs: int, chunk: int = 25) -> list[tuple]:
    """The main run's tasks: (scenario, rate, runs, seed) per chunk of `chunk` rollouts."""
    tasks: list[tuple] = []
    for scenario in SCENARIOS:
        for rate in RATES:
            n = healthy_runs if scenario == "healthy" else bad_runs
            for start in range(0, n, chunk):
                tasks.append((scenario, rate, min(chunk, n - start)))
    children = np.random.SeedSequence(seed).spawn(len(tasks))
    return [(*t, int(c.generate_state(1)[0])) for t, c in zip(tasks, children, strict=True)]


def kl_floor(alpha: float, rate: float, rho1: float = 0.01, rho0: float = 0.8) -> dict:
    """The information floor for orders -99%: expected reference-rate canary orders (and seconds at one
    canary pod's order rate) a test at level alpha needs, ln(1/alpha) / KL, KL per expected event
    = rho1 ln(rho1/rho0) - rho1 + rho0 (Poisson at rho1 against Poisson at rho0)."""
    kl = rho1 * math.log(rho1 / rho0) - rho1 + rho0
    events = math.log(1 / alpha) / kl
    return {"alpha": alpha, "kl_per_event": round(kl, 4), "events": round(events, 2),
            "seconds": round(events / (rate * ORDER_RATIO), 2)}


def scenario_floor(scenario: str, rate: float, alpha: float) -> float | None:
    """The information floor of kl_floor for any bad scenario, in seconds at one canary pod: orders against
    rho0 = 1 - stableTolerance, errors against rho0 = 1 + stableTolerance; None when the scenario is within
    the tolerance (not degraded by the spec's definition, so no floor)."""
    order_mult, error_mult = SCENARIOS[scenario]
    if order_mult != 1.0:
        rho1, rho0, ratio = order_mult, 1 - (CONFIGS["order-rate"].stable_tolerance or 0.0), ORDER_RATIO
        if rho1 >= rho0:
            return None
    else:
        rho1, rho0, ratio = error_mult, 1 + (CONFIGS["error-rate"].stable_tolerance or 0.0), ERROR_RATIO
        if rho1 <= rho0:
            return None
    kl = rho1 * math.log(rho1 / rho0) - rho1 + rho0
    return round(math.log(1 / alpha) / kl / (rate * ratio), 2)


def upper_bound_95(k: int, n: int) -> float:
    """The one-sided 95% Clopper-Pearson upper bound of a rate seen k times in n."""
    def cdf(p: float) -> float:
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 0.05 else (lo, mid)
    return round(hi, 4)


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
        "p_detect_300s": round(sum(t <= PROMOTE_AFTER_S for t in detected) / len(runs), 4),
        "orders_lost_median": round(float(np.median([r[1] for r in runs])), 1),
        "orders_lost_p90": round(float(np.percentile([r[1] for r in runs], 90)), 1),
        "extra_errors_median": round(float(np.median([r[2] for r in runs])), 1),
        "false_rollbacks_300s": sum(t is not None and t <= 300 for t in times),
        "false_rollbacks": len(detected),
        "false_rollbacks_300s_upper95": upper_bound_95(sum(t is not None and t <= 300 for t in times), len(runs)),
        "false_rollbacks_upper95": upper_bound_95(len(detected), len(runs)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer runs (under 2 minutes)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--bad-runs", type=int, default=None)
    p.add_argument("--healthy-runs", type=int, default=None)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--waves-runs", type=int, default=None, help="runs per demo-waves cell (default 200, 30 quick)")
    p.add_argument("--only", choices=("waves", "tolerance"),
                   help="run only the demo-waves cells (bench/results/judges-waves.*), or only fixed-at-tolerance, "
                   "added to bench/results/judges.json from the same seed and runs")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write docs/images/judges-detection.png")
    p.add_argument("--waves-from", type=Path, help="take the demo-waves cells from an earlier judges.json instead of "
                   "running them again (same code and seed give the same cells; saves their 5 minutes)")
    args = p.parse_args()
    bad_runs = args.bad_runs or (30 if args.quick else 200)
    healthy_runs = args.healthy_runs or (100 if args.quick else 1000)
    waves_runs = args.waves_runs or (30 if args.quick else 200)
    if args.only == "waves":
        result = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "seed": args.seed, "jobs": args.jobs,
                  **waves_cells(args.seed, waves_runs, args.jobs)}
        (RESULTS / "judges-waves.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "judges-waves.md").write_text("# bench/judges: the demo's waves\n\n" + waves_markdown(result))
        print(waves_markdown(result))
        return 0

    if args.only == "tolerance":
        return add_tolerance(RESULTS / "judges.json", args.jobs, args.plot)
    tasks = cell_tasks(args.seed, bad_runs, healthy_runs)

    started = time.monotonic()
    with multiprocessing.Pool(args.jobs) as pool:
        chunks = pool.map(run_chunk, tasks, chunksize=1)
    elapsed = time.monotonic() - started

    cells: dict = {}
    raw: dict = {}
    for c in chunks:
        for name, runs in c["runs"].items():
            cells.setdefault((c["scenario"], c["rate"], name), []).extend(runs)
        raw.setdefault((c["scenario"], c["rate"]), []).extend(c["raw"])
    calibration = {}
    for rate in RATES:
        calibration[str(rate)] = calibrate(raw["healthy", rate])
        for scenario in SCENARIOS:
            for name, runs in calibrated_runs(raw[scenario, rate], calibration[str(rate)]).items():
                cells[scenario, rate, name] = runs
    tolerance, tolerance_thresholds = tolerance_cells(args.seed, bad_runs, healthy_runs, args.jobs)
    cells.update(tolerance)
    rows = []
    for scenario in SCENARIOS:
        for rate in RATES:
            for name in JUDGES:
                horizon = (OURS_HORIZON if name == OURS else FIXED_HORIZON) * DT
                rows.append({"scenario": scenario, "rate": rate, "judge": name,
                             **summarise(cells[scenario, rate, name], horizon)})

    alpha_test = CONFIGS["order-rate"].alpha
    if args.waves_from:
        earlier = json.loads(args.waves_from.read_text())
        waves = {k: earlier[k] for k in ("waves_runtime_s", "waves_model", "waves_cells")}
        waves["waves_from"] = f"the run of {earlier['generated']}"
    else:
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
        "floors_s": {scenario: {str(r): {"per_test_alpha": scenario_floor(scenario, r, alpha_test),
                                          "rollout_alpha": scenario_floor(scenario, r, ANALYSIS.false_rollback_rate)}
                                for r in RATES}
                     for scenario in SCENARIOS if scenario != "healthy"},
        "calibration": {"false_rollback_rate": CAL_FRR, "horizon_s": CAL_HORIZON * DT, "per_rate": calibration,
                        "at_tolerance": {"orders_x": BOUNDARY[0], "errors_x": BOUNDARY[1],
                                         "per_rate": tolerance_thresholds}},
        "kayenta": {"tolerance": KAYENTA_TOLERANCE, "iqr_factor": KAYENTA_IQR_FACTOR,
                    "marginal": KAYENTA_MARGINAL, "pass": KAYENTA_PASS, "directions": DIRECTIONS,
                    "judges": {k: {"step_intervals": v[0], "judgement_intervals": v[1], "confidence": v[2]}
                               for k, v in KAYENTA.items()}},
        "cells": rows,
        "must_show": must_show(rows),
        **waves,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "judges.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "judges.md").write_text(markdown(result))
    if args.plot:
        plot(result, ROOT / "docs" / "images" / "judges-detection.png")
    print(markdown(result))
    return 0


def add_tolerance(path: Path, jobs: int, plot_too: bool) -> int:
    """Adds fixed-at-tolerance to a judges.json written without it, from the same seed and runs."""
    r = json.loads(path.read_text())
    m = r["model"]
    tolerance, thresholds = tolerance_cells(r["seed"], m["bad_runs"], m["healthy_runs"], jobs)
    by = {(c["scenario"], c["rate"], c["judge"]): c for c in r["cells"]}
    for (scenario, rate, name), runs in tolerance.items():
        by[scenario, rate, name] = {"scenario": scenario, "rate": rate, "judge": name,
                                    **summarise(runs, FIXED_HORIZON * DT)}
    r["cells"] = [by[scenario, rate, name] for scenario in SCENARIOS for rate in RATES for name in JUDGES]
    r["calibration"]["at_tolerance"] = {"orders_x": BOUNDARY[0], "errors_x": BOUNDARY[1], "per_rate": thresholds}
    r["must_show"] = must_show(r["cells"])
    path.write_text(json.dumps(r, indent=1) + "\n")
    (RESULTS / "judges.md").write_text(markdown(r))
    if plot_too:
        plot(r, ROOT / "docs" / "images" / "judges-detection.png")
    print(markdown(r))
    return 0


def _vs(ours: dict, other: dict) -> str:
    """Ours against another judge by median detection time (not detected = beyond the horizon)."""
    a, b = ours["detect_median_s"], other["detect_median_s"]
    if a is None and b is None:
        return "neither (median)"
    if a is None:
        return "slower" if b <= ours["horizon_s"] else f"ours > {ours['horizon_s']:g} s, theirs {b:g} s"
    if b is None or a < b:
        return "faster"
    return "same" if a == b else "slower"


def must_show(rows: list[dict]) -> dict:
    """The issue's bar, per cell: our false-rollback rate against alpha, and our detection against the
    calibrated judges'."""
    by = {(c["scenario"], c["rate"], c["judge"]): c for c in rows}
    frr = [{"rate": rate, "runs": by["healthy", rate, OURS]["runs"],
            "rolled_back": by["healthy", rate, OURS]["false_rollbacks"],
            "upper95": by["healthy", rate, OURS]["false_rollbacks_upper95"],
            "alpha": ANALYSIS.false_rollback_rate,
            "within_alpha": by["healthy", rate, OURS]["false_rollbacks"] / by["healthy", rate, OURS]["runs"]
            <= ANALYSIS.false_rollback_rate} for rate in RATES]
    cells = [{"scenario": scenario, "rate": rate,
              "vs_fixed_calibrated": _vs(by[scenario, rate, OURS], by[scenario, rate, FIXED_CAL]),
              "vs_kayenta_calibrated": _vs(by[scenario, rate, OURS], by[scenario, rate, KAYENTA_CAL]),
              "vs_fixed_at_tolerance": _vs(by[scenario, rate, OURS], by[scenario, rate, FIXED_TOL])}
             for scenario in SCENARIOS if scenario != "healthy" for rate in RATES]
    return {"false_rollbacks": frr, "detection": cells}


def plot(r: dict, path: Path) -> None:
    """Top: median detection time per bad scenario and rate, for every judge, with the information floor (a
    median not reached within a judge's horizon is a triangle just above that horizon). Bottom: each judge's
    false-rollback rate on the healthy runs, within 300 s and within its horizon."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bad = [s for s in SCENARIOS if s != "healthy"]
    by = {(c["scenario"], c["rate"], c["judge"]): c for c in r["cells"]}
    fig, axes = plt.subplots(2, len(RATES), figsize=(16, 9), sharey="row", height_ratios=[3, 1.4])
    colors = {name: f"C{i}" for i, name in enumerate(JUDGES)}
    for col, rate in enumerate(RATES):
        ax = axes[0, col]
        xs = np.arange(len(bad))
        for i, name in enumerate(JUDGES):
            off = (i - (len(JUDGES) - 1) / 2) * 0.1
            for x, s in zip(xs + off, bad, strict=True):
                c = by[s, rate, name]
                v = c["detect_median_s"]
                ax.plot([x], [c["horizon_s"] * 1.25 if v is None else v], ls="none",
                        marker="^" if v is None else "o", ms=10 if name == OURS else 6, color=colors[name],
                        mec="black" if name == OURS else colors[name], zorder=3 if name == OURS else 2)
            if col == 0:
                ax.plot([], [], ls="none", marker="o", ms=10 if name == OURS else 6, color=colors[name],
                        mec="black" if name == OURS else colors[name], label=SHORT[name])
        floor = [r["floors_s"][s][str(rate)]["per_test_alpha"] for s in bad]
        ax.plot(xs, [np.nan if f is None else f for f in floor], "k_", ms=22, mew=2,
                label="information floor (alpha 0.0025)" if col == 0 else None)
        ax.set_yscale("log")
        ax.set_ylim(0.5, FIXED_HORIZON * DT * 2)
        ax.set_xticks(xs, bad, rotation=30, ha="right")
        ax.set_title(f"R = {rate} req/s per pod: median detection time")
        ax.grid(alpha=0.3)
        ax = axes[1, col]
        xs = np.arange(len(JUDGES))
        within = [by["healthy", rate, j]["false_rollbacks_300s"] / by["healthy", rate, j]["runs"] for j in JUDGES]
        total = [by["healthy", rate, j]["false_rollbacks"] / by["healthy", rate, j]["runs"] for j in JUDGES]
        ax.bar(xs - 0.2, within, 0.4, color=[colors[j] for j in JUDGES], label="within 300 s")
        ax.bar(xs + 0.2, total, 0.4, color=[colors[j] for j in JUDGES], alpha=0.45, hatch="//",
               label="within the judge's horizon")
        ax.axhline(ANALYSIS.false_rollback_rate, color="k", lw=0.8, ls="--")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(0, 1.5)
        ax.set_xticks(xs, [SHORT[j] for j in JUDGES], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"R = {rate}: false rollbacks of healthy releases (dashed: 0.01)", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("seconds (log); triangle: not reached")
    axes[1, 0].set_ylabel("share of healthy runs")
    axes[1, 0].legend(fontsize=7, loc="upper left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.965))
    fig.suptitle("bench/judges: 1 canary pod of 10, judged every 2 s; guarded run 300 s, the others 1800 s",
                 y=0.995, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def waves_cells(seed: int, runs: int, jobs: int) -> dict:
    """The demo-waves cells: each (setting, scenario) over `runs` rollouts, deterministic from the seed."""
    tasks: list[tuple] = [(setting, scenario, min(10, runs - start))
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


SHORT = {OURS: "guarded", "fixed-defaults (5m, failureLimit 3)": "fixed-defaults",
         "fixed-tuned (30s, failureLimit 1)": "fixed-tuned", FIXED_CAL: "fixed-calibrated",
         FIXED_TOL: "fixed-at-tolerance",
         "kayenta-defaults (step 60s, judged every 10m, 98%)": "kayenta-defaults",
         "kayenta-tuned (step 10s, judged every 1m, 98%)": "kayenta-tuned", KAYENTA_CAL: "kayenta-calibrated"}


def _times(c: dict) -> str:
    return f"{_fmt(c['detect_median_s'], c['horizon_s'])} / {_fmt(c['detect_p90_s'], c['horizon_s'])}"


def _confidence(x: float | None, z: float) -> str:
    return "never fails" if x is None else f"{x:.6g} (z {z:.3g})"


def markdown(r: dict) -> str:
    m = r["model"]
    by = {(c["scenario"], c["rate"], c["judge"]): c for c in r["cells"]}
    lines = [
        "# bench/judges", "",
        f"Run {r['generated']} ({r['mode']} mode, seed {r['seed']}, {r['jobs']} processes, {r['runtime_s']} s). "
        f"Simulated, in process, no cluster: 1 canary pod + {m['stable_pods']} stable pods, Poisson requests at "
        f"R req/s per pod, order ratio {m['order_ratio']}, error ratio {m['error_ratio']}, judged every "
        f"{m['interval_s']:g} s. {m['bad_runs']} runs per bad cell, {m['healthy_runs']} per healthy cell, "
        f"per judge (every judge sees the same simulated rollouts). Our judge is run for at most "
        f"{m['ours_horizon_s']:g} s, the others for {m['fixed_horizon_s']:g} s; '> H' means not reached within "
        f"that horizon H.", "",
        "## The issue's bar", "",
        f"False rollbacks of our judge (falseRollbackRate {ANALYSIS.false_rollback_rate:g}) on healthy rollouts "
        f"within {m['ours_horizon_s']:g} s, with the one-sided 95% Clopper-Pearson upper bound:", "",
        "| R | runs | rolled back | rate | 95% upper bound | <= alpha |", "|---|---|---|---|---|---|",
    ]
    for f in r["must_show"]["false_rollbacks"]:
        lines.append(f"| {f['rate']} | {f['runs']} | {f['rolled_back']} | {f['rolled_back'] / f['runs']:.4f} | "
                     f"{f['upper95']:.4f} | {'yes' if f['within_alpha'] else 'NO'} |")
    cal = r["calibration"]
    lines += ["", f"Detection time, median / p90 (s), per cell. The calibrated judges' thresholds are set per R on "
              f"the healthy runs so that each metric alone rolls back at most {cal['false_rollback_rate'] / 2:g} of "
              f"them within {cal['horizon_s']:g} s (at most {cal['false_rollback_rate']:g} in all). 'floor' is the "
              f"information floor against the spec's tolerance at the per-test alpha (none where the scenario is "
              f"within the tolerance). 'vs' compares medians.", "",
              "| scenario | R | floor (s) | " + " | ".join(SHORT[j] for j in JUDGES)
              + " | ours vs fixed-calibrated | ours vs kayenta-calibrated | ours vs fixed-at-tolerance |",
              "|---|---|---|" + "---|" * (len(JUDGES) + 3)]
    verdicts = {(v["scenario"], v["rate"]): v for v in r["must_show"]["detection"]}
    for scenario in SCENARIOS:
        if scenario == "healthy":
            continue
        for rate in m["rates"]:
            floor = r["floors_s"][scenario][str(rate)]["per_test_alpha"]
            v = verdicts[scenario, rate]
            lines.append(f"| {scenario} | {rate} | {'-' if floor is None else f'{floor:g}'} | "
                         + " | ".join(_times(by[scenario, rate, j]) for j in JUDGES)
                         + f" | {v['vs_fixed_calibrated']} | {v['vs_kayenta_calibrated']} | "
                         f"{v.get('vs_fixed_at_tolerance', '')} |")
    lines += ["", "False rollbacks of every judge (healthy rollouts), within 300 s / within its horizon:", "",
              "| R | " + " | ".join(SHORT[j] for j in JUDGES) + " |", "|---|" + "---|" * len(JUDGES)]
    for rate in m["rates"]:
        lines.append(f"| {rate} | " + " | ".join(
            f"{by['healthy', rate, j]['false_rollbacks_300s'] / by['healthy', rate, j]['runs']:.3f} / "
            f"{by['healthy', rate, j]['false_rollbacks'] / by['healthy', rate, j]['runs']:.3f}" for j in JUDGES) + " |")
    lines += ["", "Calibrated thresholds per R (fixed-calibrated fails a 30 s measurement whose canary order ratio "
              "is below the first number x the stable's, or error ratio above the second x the stable's; "
              "kayenta-calibrated classifies at the confidence level shown, per metric, and only from the time shown "
              "when its first judgements had to be skipped):", "",
              "| R | healthy runs | fixed: orders below | fixed: errors above | kayenta: orders confidence "
              "| kayenta: errors confidence |", "|---|---|---|---|---|---|"]
    for rate, c in cal["per_rate"].items():
        looks = [f" from {(first + 1) * CAL_KAYENTA[1] * DT:g} s" if first else "" for first in c["kayenta_first_look"]]
        lines.append(f"| {rate} | {c['runs']} | {c['fixed_orders_below']:.4g} | {c['fixed_errors_above']:.4g} | "
                     f"{_confidence(c['kayenta_confidence'][0], c['kayenta_z'][0])}{looks[0]} | "
                     f"{_confidence(c['kayenta_confidence'][1], c['kayenta_z'][1])}{looks[1]} |")
    tol = cal.get("at_tolerance")
    if tol:
        lines += ["", f"fixed-at-tolerance: the same thresholds set on {tol['per_rate'][str(m['rates'][0])]['runs']} "
                  f"runs per R with the canary exactly at the tolerance (orders x{tol['orders_x']:g}, errors "
                  f"x{tol['errors_x']:g}):", "",
                  "| R | orders below | errors above |", "|---|---|---|"]
        for rate, c in tol["per_rate"].items():
            lines.append(f"| {rate} | {c['fixed_orders_below']:.4g} | {c['fixed_errors_above']:.4g} |")
    lines += ["", "## Bad releases", "",
              "| scenario | R | judge | detected | detect median (s) | detect p90 (s) | P(detect <= 60 s) "
              "| P(detect <= 300 s) | orders lost median | orders lost p90 | extra errors median |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in r["cells"]:
        if c["scenario"] == "healthy":
            continue
        lines.append(f"| {c['scenario']} | {c['rate']} | {c['judge']} | {c['detected']}/{c['runs']} | "
                     f"{_fmt(c['detect_median_s'], c['horizon_s'])} | {_fmt(c['detect_p90_s'], c['horizon_s'])} | "
                     f"{c['p_detect_60s']:.3f} | {c['p_detect_300s']:.3f} | {c['orders_lost_median']:g} | "
                     f"{c['orders_lost_p90']:g} | {c['extra_errors_median']:g} |")
    lines += ["", "## Healthy releases: false rollbacks", "",
              "| R | judge | runs | rolled back within 300 s (95% upper) | rolled back within horizon (95% upper) "
              "| horizon (s) |", "|---|---|---|---|---|---|"]
    for c in r["cells"]:
        if c["scenario"] != "healthy":
            continue
        lines.append(f"| {c['rate']} | {c['judge']} | {c['runs']} | {c['false_rollbacks_300s']} "
                     f"({c['false_rollbacks_300s'] / c['runs']:.4f}, {c['false_rollbacks_300s_upper95']:.4f}) | "
                     f"{c['false_rollbacks']} ({c['false_rollbacks'] / c['runs']:.4f}, "
                     f"{c['false_rollbacks_upper95']:.4f}) | {c['horizon_s']:g} |")
    lines += ["", "## Information floor, orders -99% (rho1 0.01 against rho0 0.8)", "",
              "| R | alpha | KL per expected order | expected orders needed | seconds at one canary pod |",
              "|---|---|---|---|---|"]
    for rate, f in r["floor_orders_99pct"].items():
        for v in (f["per_test_alpha"], f["rollout_alpha"]):
            lines.append(f"| {rate} | {v['alpha']:g} | {v['kl_per_event']:g} | {v['events']:g} | {v['seconds']:g} |")
    if r.get("waves_cells"):
        lines += ["", "## The demo's waves: caught before 100%, with and without spec.analysis.detect", "",
                  waves_markdown(r)]
        if r.get("waves_from"):
            lines.append(f"(Taken from {r['waves_from']}, not run again.)")
    lines += ["", "Detection time counts from the canary's first interval to the end of the interval whose "
              "judgement fails (no scrape lag, no query alignment). Orders lost = expected canary orders at the "
              "baseline ratio minus actual, until detection (or over the horizon when not detected). "
              "P(detect <= 300 s) is the chance of catching the release before 100% for a plan that goes to 100% "
              "after a 5-minute canary. See docs/judges.md.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
