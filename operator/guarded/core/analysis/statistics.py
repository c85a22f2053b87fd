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

The judges return the records a status keeps (api.analysis.EvidenceRecord, JudgementRecord): no twin types.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from guarded.api.analysis import Direction, EvidenceRecord, JudgementRecord, Verdict


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
    detect_degradation: float | None = None   # spec.analysis.detect: a degradation that must be detectable
    detect_power: float | None = None
    interval_seconds: float = 5.0

    @property
    def detect_rho(self) -> float | None:
        """The required detectable degradation as a ratio of canary to reference (0.8 for orders -20%)."""
        if self.detect_degradation is None:
            return None
        sign = -1 if self.direction is Direction.HIGHER_IS_BETTER else 1
        return 1 + sign * self.detect_degradation

    @property
    def bound(self) -> float | None:
        """The absolute bound of the metric's direction: a floor for orders, a ceiling for errors."""
        return self.min_ratio if self.direction is Direction.HIGHER_IS_BETTER else self.max_ratio

    @property
    def judges(self) -> int:
        """How many judges test the metric (each spends a share of the wave's false-rollback budget)."""
        return sum(x is not None for x in (self.stable_tolerance, self.pre_rollout_tolerance, self.bound))


# Degraded ratios the mixture puts its weight on, per direction.
_DROP_GRID = (0.01, 0.05, 0.15, 0.3, 0.45, 0.6, 0.75)
_RISE_GRID = (2.0, 3.0, 5.0, 8.0, 13.0, 25.0, 50.0)
# A metric that should not drop (orders) most often fails by collapsing (a broken checkout: the retailer's
# 99% drop), and each second of a collapse costs the most: half of the mixture's weight is on its deepest
# point, so a collapse is told after ln 2 nats of evidence beyond log(1/alpha) instead of ln 7 (about 1.7
# orders sooner at the demo's alpha: bench/floor). Any weights that sum to 1 keep the guarantee.
COLLAPSE_WEIGHT = 0.5


def grid(direction: Direction, rho0: float, extra: float | None = None) -> tuple[float, ...]:
    """The mixture's points beyond rho0; `extra` (a required detectable degradation, fixed by the spec
    before any data) joins them when it lies beyond rho0 too."""
    base = _DROP_GRID if direction is Direction.HIGHER_IS_BETTER else _RISE_GRID
    if extra is not None and extra not in base:
        base = tuple(sorted((*base, extra)))
    # The fixed points keep a 2% margin from rho0; the required degradation's point stays whenever it lies
    # beyond rho0 at all, else a small required degradation (orders -4%: rho0 0.98, rho1 0.96) would lose
    # the only point that can detect it and the power hold would wait forever.
    if direction is Direction.HIGHER_IS_BETTER:
        points = tuple(r for r in base if r < rho0 * 0.98 or (r == extra and r < rho0))
        return points or (rho0 / 2,)
    points = tuple(r for r in base if r > rho0 * 1.02 or (r == extra and r > rho0))
    return points or (rho0 * 2,)


def log_weights(direction: Direction, points: Sequence[float], extra: float | None = None) -> list[float]:
    """The mixture's log prior weight of each grid point (they sum to 1). Uniform, except that for a drop the
    deepest point has COLLAPSE_WEIGHT; a required detectable degradation (`extra`) keeps its uniform share,
    so that power before promotion asks no more evidence than with uniform weights."""
    n = len(points)
    if direction is not Direction.HIGHER_IS_BETTER or n < 3:
        return [-math.log(n)] * n
    weights = [0.0] * n
    kept = [j for j, rho in enumerate(points) if rho == extra and j != 0]
    for j in kept:
        weights[j] = 1 / n
    rest = [j for j in range(1, n) if j not in kept]
    weights[0] = COLLAPSE_WEIGHT
    for j in rest:
        weights[j] = (1 - COLLAPSE_WEIGHT - len(kept) / n) / len(rest)
    return [math.log(w) for w in weights]


def point_cost(direction: Direction, points: Sequence[float], rho1: float, extra: float | None = None) -> float:
    """-log of the weight of the grid point nearest `rho1` (in log ratio): how far beyond log(1/alpha) that
    point's own log LR must get for the mixture to cross."""
    j = min(range(len(points)), key=lambda i: abs(math.log(points[i]) - math.log(rho1)))
    return -log_weights(direction, points, extra)[j]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _mixture(log_lrs: Sequence[float], log_w: Sequence[float]) -> float:
    return _logsumexp([x + w for x, w in zip(log_lrs, log_w, strict=True)])


def _safe_log(x: float) -> float:
    return math.log(x) if x > 0 else -745.0


@dataclass(frozen=True, kw_only=True)
class _Test:
    """What one judge gathered over the intervals, before its verdict."""

    judge: str
    sums: list[float]                   # log likelihood ratio per grid point
    points: tuple[float, ...]           # the grid
    canary_events: float
    canary_requests: float
    reference_events: float
    reference_requests: float
    rho0: float
    expected: float                     # canary events expected at the reference's ratio
    reference_missing: bool
    reference_ratio: float | None = None


def _canary_totals(data: MetricData) -> tuple[float, float]:
    """The canary's events and requests over the intervals it served (added in order, as they came)."""
    kc = nc = 0.0
    for c in data.canary:
        if c is not None and c.requests > 0:
            kc, nc = kc + c.events, nc + c.requests
    return kc, nc


def _against_stable(cfg: JudgeConfig, data: MetricData) -> EvidenceRecord:
    rho0 = stable_rho0(cfg)
    points = grid(cfg.direction, rho0, cfg.detect_rho)
    sums = [0.0] * len(points)
    ks = ns = 0.0
    expected = 0.0  # canary events expected if it behaved exactly like the stable
    for c, s in zip(data.canary, data.stable, strict=False):
        if c is None or s is None or c.requests <= 0 or s.requests <= 0:
            continue
        ks, ns = ks + s.events, ns + s.requests
        expected += c.requests * s.events / s.requests
        pi0 = c.requests * rho0 / (c.requests * rho0 + s.requests)
        for j, rho in enumerate(points):
            pi = c.requests * rho / (c.requests * rho + s.requests)
            sums[j] += c.events * (_safe_log(pi) - _safe_log(pi0)) + s.events * (
                _safe_log(1 - pi) - _safe_log(1 - pi0))
    kc, nc = _canary_totals(data)
    return _conclude(cfg, _Test(judge="Stable", sums=sums, points=points, canary_events=kc, canary_requests=nc,
                                reference_events=ks, reference_requests=ns, rho0=rho0, expected=expected,
                                reference_missing=ns <= 0))


def _against_reference(cfg: JudgeConfig, data: MetricData, *, judge: str, p_ref: float, rho0: float,
                       ref_events: float, ref_requests: float) -> EvidenceRecord:
    points = grid(cfg.direction, rho0, cfg.detect_rho)
    sums = [0.0] * len(points)
    for c in data.canary:
        if c is None or c.requests <= 0:
            continue
        mu = c.requests * p_ref
        for j, rho in enumerate(points):
            # Poisson(mu*rho) against Poisson(mu*rho0)
            sums[j] += c.events * (_safe_log(rho) - _safe_log(rho0)) - mu * (rho - rho0)
    kc, nc = _canary_totals(data)
    return _conclude(cfg, _Test(
        judge=judge, sums=sums, points=points, canary_events=kc, canary_requests=nc, reference_events=ref_events,
        reference_requests=ref_requests, rho0=rho0, expected=nc * p_ref, reference_ratio=p_ref,
        reference_missing=p_ref <= 0 and cfg.direction is Direction.HIGHER_IS_BETTER))


def stable_rho0(cfg: JudgeConfig) -> float:
    assert cfg.stable_tolerance is not None
    return 1 - cfg.stable_tolerance if cfg.direction is Direction.HIGHER_IS_BETTER else 1 + cfg.stable_tolerance


def pre_rollout_reference(cfg: JudgeConfig, pre: Counts) -> tuple[float, float]:
    """The PreRollout judge's reference ratio and rho0.

    A conservative reference: the end of a ~99.9% interval on the pre-rollout event count that
    makes a Fail harder, so that the baseline's own sampling noise cannot cause a rollback
    (and zero errors before the rollout does not make one canary error a failure)."""
    assert cfg.pre_rollout_tolerance is not None
    z = 3.3
    k = max(pre.events, 0.0)
    if cfg.direction is Direction.HIGHER_IS_BETTER:
        k_bound = max(k + z * z / 2 - z * math.sqrt(k + z * z / 4), 0.0)
        return k_bound / pre.requests, 1 - cfg.pre_rollout_tolerance
    k_bound = k + z * z / 2 + z * math.sqrt(k + z * z / 4)
    return min(k_bound / pre.requests, 1.0), 1 + cfg.pre_rollout_tolerance


def _against_pre_rollout(cfg: JudgeConfig, data: MetricData) -> EvidenceRecord:
    assert cfg.pre_rollout_tolerance is not None
    pre = data.pre_rollout
    if pre is None or pre.requests <= 0:
        return EvidenceRecord(judge="PreRollout", verdict=Verdict.INCONCLUSIVE, no_data=True,
                              reason="no pre-rollout baseline (no service traffic before the rollout started)")
    p_ref, rho0 = pre_rollout_reference(cfg, pre)
    return _against_reference(cfg, data, judge="PreRollout", p_ref=p_ref, rho0=rho0,
                              ref_events=pre.events, ref_requests=pre.requests)


def _against_bound(cfg: JudgeConfig, data: MetricData) -> EvidenceRecord:
    assert cfg.bound is not None
    return _against_reference(cfg, data, judge="Bound", p_ref=cfg.bound, rho0=1.0, ref_events=0.0, ref_requests=0.0)


# The degradation a Pass must have been able to see: an order collapse, an error ratio ten times higher.
DETECT_RHO = {Direction.HIGHER_IS_BETTER: 0.01, Direction.LOWER_IS_BETTER: 10.0}


POWER_Z = 3.0  # a degraded canary keeps its log LR below the needed level with probability ~0.1%


def _detect_rho(direction: Direction, rho0: float) -> float:
    """The degradation a Pass must have been able to see, beyond rho0 whatever the tolerance."""
    if direction is Direction.LOWER_IS_BETTER:
        return max(DETECT_RHO[direction], rho0 * 1.5)
    return min(DETECT_RHO[direction], rho0 / 2)


def _power(direction: Direction, rho0: float, expected: float) -> float:
    """A low quantile (mean - 3 sd) of the log likelihood ratio the test would have gathered had the
    canary been degraded to DETECT_RHO, given `expected` canary events at the reference's rate
    (Poisson approximation: k ~ Poisson(E*rho1), log LR = k log(rho1/rho0) - E (rho1 - rho0))."""
    rho1 = _detect_rho(direction, rho0)
    step = math.log(rho1 / rho0)
    mean = expected * (rho1 * step - (rho1 - rho0))
    sd = math.sqrt(max(expected * rho1, 0.0)) * abs(step)
    return mean - POWER_Z * sd


def _outcome(cfg: JudgeConfig, t: _Test, log_lr: float, log_threshold: float,
             reference_ratio: float | None) -> tuple[Verdict, str]:
    kc, nc = t.canary_events, t.canary_requests
    if log_lr >= log_threshold:
        worse = "lower" if cfg.direction is Direction.HIGHER_IS_BETTER else "higher"
        return Verdict.FAIL, (f"canary ratio {kc / nc:.5f} is {worse} than {t.rho0:g} x the {t.judge} reference "
                              f"{(reference_ratio or 0):.5f} (log LR {log_lr:.2f} >= {log_threshold:.2f})")
    if nc < cfg.min_requests:
        return Verdict.INCONCLUSIVE, f"{nc:.0f} of {cfg.min_requests:.0f} canary requests needed"
    # A Pass must mean something: only once the evidence so far would have sufficed to fail a canary
    # degraded to DETECT_RHO (orders -99%, errors x10) does "no failure" count as a Pass.
    needed = log_threshold + point_cost(cfg.direction, t.points, _detect_rho(cfg.direction, t.rho0), cfg.detect_rho)
    gathered = _power(cfg.direction, t.rho0, t.expected)
    if gathered < needed:
        # A service with little history before the rollout has a thin baseline, whose conservative bound is
        # far below its real ratio: say so, since that, not the canary, is then what holds the wave.
        baseline = (f" (pre-rollout baseline: {t.reference_events:.0f} events in {t.reference_requests:.0f} "
                    f"requests, taken at {reference_ratio or 0:.5f} per request)" if t.judge == "PreRollout" else "")
        return Verdict.INCONCLUSIVE, (f"not enough evidence yet: {t.expected:.1f} expected canary events give "
                                      f"power {gathered:.1f} of {needed:.1f} needed{baseline}")
    return Verdict.PASS, "not degraded"


def _conclude(cfg: JudgeConfig, t: _Test) -> EvidenceRecord:
    log_lr = _mixture(t.sums, log_weights(cfg.direction, t.points, cfg.detect_rho)) if t.sums else 0.0
    log_threshold = math.log(1 / cfg.alpha)
    kc, nc, kr, nr = t.canary_events, t.canary_requests, t.reference_events, t.reference_requests
    ref_ratio = t.reference_ratio if t.reference_ratio is not None else (kr / nr if nr > 0 else None)
    no_data = nc <= 0 or t.reference_missing
    if no_data:
        verdict, reason = Verdict.INCONCLUSIVE, "no canary requests yet" if nc <= 0 else "no baseline data"
    else:
        verdict, reason = _outcome(cfg, t, log_lr, log_threshold, ref_ratio)
    return EvidenceRecord(
        judge=t.judge, verdict=verdict, reason=reason, no_data=no_data,
        canary_events=round(kc, 3), canary_requests=round(nc, 3),
        reference_events=round(kr, 3), reference_requests=round(nr, 3),
        canary_ratio=_ratio(kc / nc if nc > 0 else None), reference_ratio=_ratio(ref_ratio),
        threshold_rho=t.rho0, log_lr=round(log_lr, 4), log_threshold=round(log_threshold, 4))


def _ratio(value: float | None) -> float | None:
    """A ratio as a status shows it (six decimals)."""
    return None if value is None else round(value, 6)


def judge(cfg: JudgeConfig, data: MetricData, *, stable_serving: bool = True) -> JudgementRecord:
    """Judge one metric. `stable_serving` is False in a wave that runs no stable pod (100%): the
    stable judge then counts only if earlier intervals gave it a reference."""
    if data.error:
        return JudgementRecord(metric=cfg.name, verdict=Verdict.INCONCLUSIVE, reason=f"no data: {data.error}",
                               no_data=True)
    evidence: list[EvidenceRecord] = []
    if cfg.stable_tolerance is not None:
        stable = _against_stable(cfg, data)
        # A wave without stable pods (100%) keeps the evidence gathered while they served; only
        # a rollout whose stable never served anything has no stable reference at all.
        if stable_serving or stable.reference_requests > 0:
            evidence.append(stable)
    if cfg.pre_rollout_tolerance is not None:
        evidence.append(_against_pre_rollout(cfg, data))
    if cfg.bound is not None:
        evidence.append(_against_bound(cfg, data))
    if not evidence:
        return JudgementRecord(metric=cfg.name, verdict=Verdict.INCONCLUSIVE, reason="no judge configured")
    failed = [e for e in evidence if e.verdict is Verdict.FAIL]
    if failed:
        return JudgementRecord(metric=cfg.name, verdict=Verdict.FAIL, reason="; ".join(e.reason for e in failed),
                               evidence=evidence)
    pending = [e for e in evidence if e.verdict is Verdict.INCONCLUSIVE]
    if pending:
        return JudgementRecord(metric=cfg.name, verdict=Verdict.INCONCLUSIVE,
                               reason="; ".join(f"{e.judge}: {e.reason}" for e in pending), evidence=evidence,
                               no_data=any(e.no_data for e in pending))
    return JudgementRecord(metric=cfg.name, verdict=Verdict.PASS, reason="not degraded", evidence=evidence)
