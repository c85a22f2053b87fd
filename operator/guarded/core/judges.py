"""Judges: is the canary's rate (orders per request, errors per request) degraded? Pure arithmetic.

Counts beat averages. Each analysis step gives, per group of pods, two counter increases over
the same interval: events (orders, or errors) and exposures (requests). A judge asks whether the
canary's event ratio is worse than a reference by more than a tolerance, with a sequential test
that may look after every interval for as long as the wave lasts and still keeps its
false-rollback rate below alpha. The method (docs/analysis.md):

* **Against the stable pods, same intervals** (cancels time-of-day effects). Within interval i,
  given the total events k_i = k_ci + k_si, the canary's share is Binomial(k_i, pi_i(rho)) with
  pi_i(rho) = n_ci*rho / (n_ci*rho + n_si), where rho = p_canary / p_stable is the ratio of the two
  event rates per request and n are the requests. "Not degraded" is rho >= rho0 (orders) or
  rho <= rho0 (errors), rho0 = 1 -/+ tolerance.
* **Against the whole service before the rollout** (catches a change that hurts every version,
  such as a shared configuration): the canary's events in interval i are Poisson(n_ci * p_ref * rho),
  with p_ref the pre-rollout ratio taken at a conservative confidence bound.
* **Against absolute bounds**: the same Poisson test with p_ref the bound and rho0 = 1.

For each judge the statistic is a mixture likelihood ratio over a grid of degraded rho values
against rho0, accumulated over intervals. Under "not degraded" it is a non-negative
supermartingale (one-sided monotone likelihood ratio), so by Ville's inequality the chance that
it *ever* exceeds 1/alpha is at most alpha, however often it is looked at. A collapse (orders -99%)
multiplies it by roughly 1/(1-pi0)^k per interval, so it crosses within the first intervals.

A judgement is Fail when any judge crosses; Inconclusive when there is no data (provider error,
no canary traffic, a missing baseline); otherwise Pass once the canary has served enough
requests (min_requests), and Inconclusive before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class Direction(StrEnum):
    HIGHER_IS_BETTER = "HigherIsBetter"   # orders per request
    LOWER_IS_BETTER = "LowerIsBetter"     # errors per request


@dataclass(frozen=True)
class Counts:
    """Counter increases over one interval: events (numerator) and requests (denominator)."""

    events: float
    requests: float


@dataclass(frozen=True, kw_only=True)
class MetricData:
    """What the provider returned for one metric over the wave so far (intervals aligned by index)."""

    canary: tuple[Counts | None, ...] = ()
    stable: tuple[Counts | None, ...] = ()
    pre_rollout: Counts | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class JudgeConfig:
    name: str
    direction: Direction
    stable_tolerance: float | None = 0.2
    pre_rollout_tolerance: float | None = 0.5
    min_ratio: float | None = None
    max_ratio: float | None = None
    alpha: float = 0.01
    min_requests: float = 100.0


@dataclass(frozen=True, kw_only=True)
class Evidence:
    judge: str                 # Stable | PreRollout | Bound
    verdict: Verdict
    canary_events: float = 0.0
    canary_requests: float = 0.0
    reference_events: float = 0.0
    reference_requests: float = 0.0
    canary_ratio: float | None = None
    reference_ratio: float | None = None
    threshold_rho: float | None = None
    log_lr: float = 0.0
    log_threshold: float = 0.0
    reason: str = ""
    no_data: bool = False      # Inconclusive for want of data, not for want of evidence yet


@dataclass(frozen=True, kw_only=True)
class Judgement:
    metric: str
    verdict: Verdict
    reason: str
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)
    no_data: bool = False


# Degraded ratios the mixture puts its (uniform) weight on, per direction.
_DROP_GRID = (0.01, 0.05, 0.15, 0.3, 0.45, 0.6, 0.75)
_RISE_GRID = (2.0, 3.0, 5.0, 8.0, 13.0, 25.0, 50.0)


def _grid(direction: Direction, rho0: float) -> tuple[float, ...]:
    if direction is Direction.HIGHER_IS_BETTER:
        points = tuple(r for r in _DROP_GRID if r < rho0 * 0.98)
        return points or (rho0 / 2,)
    points = tuple(r for r in _RISE_GRID if r > rho0 * 1.02)
    return points or (rho0 * 2,)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _mixture(log_lrs: Sequence[float]) -> float:
    return _logsumexp(log_lrs) - math.log(len(log_lrs))


def _safe_log(x: float) -> float:
    return math.log(x) if x > 0 else -745.0


def against_stable(cfg: JudgeConfig, data: MetricData) -> Evidence:
    assert cfg.stable_tolerance is not None
    rho0 = 1 - cfg.stable_tolerance if cfg.direction is Direction.HIGHER_IS_BETTER else 1 + cfg.stable_tolerance
    grid = _grid(cfg.direction, rho0)
    sums = [0.0] * len(grid)
    kc = nc = ks = ns = 0.0
    for c in data.canary:
        if c is not None and c.requests > 0:
            kc, nc = kc + c.events, nc + c.requests
    expected = 0.0  # canary events expected if it behaved exactly like the stable
    for c, s in zip(data.canary, data.stable, strict=False):
        if c is None or s is None or c.requests <= 0 or s.requests <= 0:
            continue
        ks, ns = ks + s.events, ns + s.requests
        expected += c.requests * s.events / s.requests
        pi0 = c.requests * rho0 / (c.requests * rho0 + s.requests)
        for j, rho in enumerate(grid):
            pi = c.requests * rho / (c.requests * rho + s.requests)
            sums[j] += c.events * (_safe_log(pi) - _safe_log(pi0)) + s.events * (
                _safe_log(1 - pi) - _safe_log(1 - pi0))
    return _conclude(cfg, "Stable", sums, kc, nc, ks, ns, rho0, reference_missing=ns <= 0, expected=expected)


def _against_reference(cfg: JudgeConfig, data: MetricData, *, judge: str, p_ref: float, rho0: float,
                       ref_events: float, ref_requests: float) -> Evidence:
    grid = _grid(cfg.direction, rho0)
    sums = [0.0] * len(grid)
    kc = nc = 0.0
    for c in data.canary:
        if c is None or c.requests <= 0:
            continue
        kc, nc = kc + c.events, nc + c.requests
        mu = c.requests * p_ref
        for j, rho in enumerate(grid):
            # Poisson(mu*rho) against Poisson(mu*rho0)
            sums[j] += c.events * (_safe_log(rho) - _safe_log(rho0)) - mu * (rho - rho0)
    return _conclude(cfg, judge, sums, kc, nc, ref_events, ref_requests, rho0,
                     reference_missing=p_ref <= 0 and cfg.direction is Direction.HIGHER_IS_BETTER,
                     reference_ratio=p_ref, expected=nc * p_ref)


def against_pre_rollout(cfg: JudgeConfig, data: MetricData) -> Evidence:
    assert cfg.pre_rollout_tolerance is not None
    pre = data.pre_rollout
    if pre is None or pre.requests <= 0:
        return Evidence(judge="PreRollout", verdict=Verdict.INCONCLUSIVE, no_data=True,
                        reason="no pre-rollout baseline (no service traffic before the rollout started)")
    # A conservative reference: the end of a ~99.9% interval on the pre-rollout event count that
    # makes a Fail harder, so that the baseline's own sampling noise cannot cause a rollback
    # (and zero errors before the rollout does not make one canary error a failure).
    z = 3.3
    k = max(pre.events, 0.0)
    if cfg.direction is Direction.HIGHER_IS_BETTER:
        k_bound = max(k + z * z / 2 - z * math.sqrt(k + z * z / 4), 0.0)
        p_ref, rho0 = k_bound / pre.requests, 1 - cfg.pre_rollout_tolerance
    else:
        k_bound = k + z * z / 2 + z * math.sqrt(k + z * z / 4)
        p_ref, rho0 = min(k_bound / pre.requests, 1.0), 1 + cfg.pre_rollout_tolerance
    return _against_reference(cfg, data, judge="PreRollout", p_ref=p_ref, rho0=rho0,
                              ref_events=pre.events, ref_requests=pre.requests)


def against_bound(cfg: JudgeConfig, data: MetricData) -> Evidence:
    bound = cfg.min_ratio if cfg.direction is Direction.HIGHER_IS_BETTER else cfg.max_ratio
    assert bound is not None
    return _against_reference(cfg, data, judge="Bound", p_ref=bound, rho0=1.0, ref_events=0.0, ref_requests=0.0)


# The degradation a Pass must have been able to see: an order collapse, an error ratio ten times higher.
DETECT_RHO = {Direction.HIGHER_IS_BETTER: 0.01, Direction.LOWER_IS_BETTER: 10.0}


POWER_Z = 3.0  # a degraded canary keeps its log LR below the needed level with probability ~0.1%


def power(direction: Direction, rho0: float, expected: float) -> float:
    """A low quantile (mean - 3 sd) of the log likelihood ratio the test would have gathered had the
    canary been degraded to DETECT_RHO, given `expected` canary events at the reference's rate
    (Poisson approximation: k ~ Poisson(E*rho1), log LR = k log(rho1/rho0) - E (rho1 - rho0))."""
    rho1 = max(DETECT_RHO[direction], rho0 * 1.5) if direction is Direction.LOWER_IS_BETTER \
        else min(DETECT_RHO[direction], rho0 / 2)
    step = math.log(rho1 / rho0)
    mean = expected * (rho1 * step - (rho1 - rho0))
    sd = math.sqrt(max(expected * rho1, 0.0)) * abs(step)
    return mean - POWER_Z * sd


def _conclude(cfg: JudgeConfig, judge: str, sums: list[float], kc: float, nc: float, kr: float, nr: float,
              rho0: float, *, reference_missing: bool, reference_ratio: float | None = None,
              expected: float = 0.0) -> Evidence:
    log_lr = _mixture(sums) if sums else 0.0
    log_threshold = math.log(1 / cfg.alpha)
    ref_ratio = reference_ratio if reference_ratio is not None else (kr / nr if nr > 0 else None)
    common = dict(judge=judge, canary_events=round(kc, 3), canary_requests=round(nc, 3),
                  reference_events=round(kr, 3), reference_requests=round(nr, 3),
                  canary_ratio=(kc / nc) if nc > 0 else None, reference_ratio=ref_ratio,
                  threshold_rho=rho0, log_lr=round(log_lr, 4), log_threshold=round(log_threshold, 4))
    if nc <= 0:
        return Evidence(verdict=Verdict.INCONCLUSIVE, reason="no canary requests yet", no_data=True,
                        **common)  # type: ignore[arg-type]
    if reference_missing:
        return Evidence(verdict=Verdict.INCONCLUSIVE, reason="no baseline data", no_data=True,
                        **common)  # type: ignore[arg-type]
    if log_lr >= log_threshold:
        worse = "lower" if cfg.direction is Direction.HIGHER_IS_BETTER else "higher"
        return Evidence(verdict=Verdict.FAIL, reason=(
            f"canary ratio {kc / nc:.5f} is {worse} than {rho0:g} x the {judge} reference "
            f"{(ref_ratio or 0):.5f} (log LR {log_lr:.2f} >= {log_threshold:.2f})"), **common)  # type: ignore[arg-type]
    if nc < cfg.min_requests:
        return Evidence(verdict=Verdict.INCONCLUSIVE,
                        reason=f"{nc:.0f} of {cfg.min_requests:.0f} canary requests needed", **common)  # type: ignore[arg-type]
    # A Pass must mean something: only once the evidence so far would have sufficed to fail a canary
    # degraded to DETECT_RHO (orders -99%, errors x10) does "no failure" count as a Pass.
    needed = log_threshold + math.log(len(sums) or 1)
    gathered = power(cfg.direction, rho0, expected)
    if gathered < needed:
        return Evidence(verdict=Verdict.INCONCLUSIVE, reason=(
            f"not enough evidence yet: {expected:.1f} expected canary events give power {gathered:.1f} "
            f"of {needed:.1f} needed"), **common)  # type: ignore[arg-type]
    return Evidence(verdict=Verdict.PASS, reason="not degraded", **common)  # type: ignore[arg-type]


def judge(cfg: JudgeConfig, data: MetricData, *, stable_serving: bool = True) -> Judgement:
    """Judge one metric. `stable_serving` is False in a wave that runs no stable pod (100%): the
    stable judge then counts only if earlier intervals gave it a reference."""
    if data.error:
        return Judgement(metric=cfg.name, verdict=Verdict.INCONCLUSIVE, reason=f"no data: {data.error}",
                         no_data=True)
    evidence: list[Evidence] = []
    if cfg.stable_tolerance is not None:
        stable = against_stable(cfg, data)
        # A wave without stable pods (100%) keeps the evidence gathered while they served; only
        # a rollout whose stable never served anything has no stable reference at all.
        if stable_serving or stable.reference_requests > 0:
            evidence.append(stable)
    if cfg.pre_rollout_tolerance is not None:
        evidence.append(against_pre_rollout(cfg, data))
    if (cfg.min_ratio if cfg.direction is Direction.HIGHER_IS_BETTER else cfg.max_ratio) is not None:
        evidence.append(against_bound(cfg, data))
    if not evidence:
        return Judgement(metric=cfg.name, verdict=Verdict.INCONCLUSIVE, reason="no judge configured")
    failed = [e for e in evidence if e.verdict is Verdict.FAIL]
    if failed:
        return Judgement(metric=cfg.name, verdict=Verdict.FAIL, reason="; ".join(e.reason for e in failed),
                         evidence=tuple(evidence))
    pending = [e for e in evidence if e.verdict is Verdict.INCONCLUSIVE]
    if pending:
        return Judgement(metric=cfg.name, verdict=Verdict.INCONCLUSIVE,
                         reason="; ".join(f"{e.judge}: {e.reason}" for e in pending), evidence=tuple(evidence),
                         no_data=any(e.no_data for e in pending))
    return Judgement(metric=cfg.name, verdict=Verdict.PASS, reason="not degraded", evidence=tuple(evidence))
