"""Power before promotion: had the canary been degraded by the amount spec.analysis.detect names, would
the judges have failed it by now? Pure.

A Pass only says that no judge crossed its threshold. Whether a slow burn (orders -30%) would have
crossed depends on how much evidence the waves gathered, so the wave before the last holds until it
is enough (core/judging.power_hold). The criterion, per judge and per grid point rho of its mixture:

* Under the alternative (canary ratio = reference ratio x rho1, rho1 = 1 -/+ degradation) the judge's
  log likelihood ratio for rho is a sum of independent Poisson terms, so its mean M and variance V
  follow from the intervals' requests alone (the Stable judge: k_c ln(pi/pi0) + k_s ln((1-pi)/(1-pi0))
  with k_c ~ Poisson(n_c p rho1), k_s ~ Poisson(n_s p); the PreRollout judge: k_c ln(rho/rho0) - mu (rho-rho0)).
* The mixture crosses log(1/alpha) whenever one point's sum crosses L = log(1/alpha) - log w (w: the point's
  weight in the mixture, statistics.log_weights; 1/|G| but for a drop's deepest point), so
  P(a Fail by now) >= max over judges and points of P(sum >= L) ~ Phi((M - L) / sqrt(V)) (normal
  approximation; it ignores the chances of having crossed earlier, so it is a lower bound).
* Powered when that probability is at least 1 - beta. Further canary requests at the latest interval's
  split add m and v per request; the requests still needed are the smallest x with
  M + m x - z sqrt(V + v x) >= L, z = Phi^-1(1 - beta).

The unit tests check the probability against simulated degraded canaries (tests/unit/test_power.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from guarded.api.analysis import PowerRecord
from guarded.core.analysis.statistics import (
    JudgeConfig,
    MetricData,
    grid,
    log_weights,
    pre_rollout_reference,
    stable_rho0,
)

_NORMAL = NormalDist()


@dataclass(frozen=True)
class _Sums:
    """One judge under the alternative: per grid point, the log LR's mean and variance so far, and what one
    more canary request at the latest split adds to each."""

    mean: list[float]
    var: list[float]
    mean_per_request: list[float]
    var_per_request: list[float]
    thresholds: list[float]     # per point: log(1/alpha) - log of its weight in the mixture


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -745.0


def _stable(cfg: JudgeConfig, data: MetricData, rho1: float) -> _Sums | None:
    rho0 = stable_rho0(cfg)
    points = grid(cfg.direction, rho0, cfg.detect_rho)
    pairs = [(c, s) for c, s in zip(data.canary, data.stable, strict=False)
             if c is not None and s is not None and c.requests > 0 and s.requests > 0]
    ks, ns = sum(s.events for _, s in pairs), sum(s.requests for _, s in pairs)
    p = ks / ns if ks > 0 else None
    if p is None and data.pre_rollout is not None and data.pre_rollout.events > 0:
        p = data.pre_rollout.events / data.pre_rollout.requests
    if p is None or not pairs:
        return None
    mean, var = [0.0] * len(points), [0.0] * len(points)
    for c, s in pairs:
        pi0 = c.requests * rho0 / (c.requests * rho0 + s.requests)
        for j, rho in enumerate(points):
            pi = c.requests * rho / (c.requests * rho + s.requests)
            a, b = _log(pi) - _log(pi0), _log(1 - pi) - _log(1 - pi0)
            mean[j] += c.requests * p * rho1 * a + s.requests * p * b
            var[j] += c.requests * p * rho1 * a * a + s.requests * p * b * b
    c, s = pairs[-1]
    split = s.requests / c.requests   # stable requests per canary request, as the wave runs now
    m_rate, v_rate = [], []
    for rho in points:
        pi, pi0 = rho / (rho + split), rho0 / (rho0 + split)
        a, b = _log(pi) - _log(pi0), _log(1 - pi) - _log(1 - pi0)
        m_rate.append(p * rho1 * a + p * split * b)
        v_rate.append(p * rho1 * a * a + p * split * b * b)
    return _Sums(mean, var, m_rate, v_rate, _thresholds(cfg, points))


def _pre_rollout(cfg: JudgeConfig, data: MetricData, rho1: float) -> _Sums | None:
    pre = data.pre_rollout
    if pre is None or pre.requests <= 0 or pre.events <= 0 or cfg.pre_rollout_tolerance is None:
        return None
    p_ref, rho0 = pre_rollout_reference(cfg, pre)
    p_true = pre.events / pre.requests
    points = grid(cfg.direction, rho0, cfg.detect_rho)
    nc = sum(c.requests for c in data.canary if c is not None and c.requests > 0)
    m_rate = [p_true * rho1 * (_log(rho) - _log(rho0)) - p_ref * (rho - rho0) for rho in points]
    v_rate = [p_true * rho1 * (_log(rho) - _log(rho0)) ** 2 for rho in points]
    return _Sums([nc * m for m in m_rate], [nc * v for v in v_rate], m_rate, v_rate, _thresholds(cfg, points))


def _thresholds(cfg: JudgeConfig, points: tuple[float, ...]) -> list[float]:
    return [math.log(1 / cfg.alpha) - w for w in log_weights(cfg.direction, points, cfg.detect_rho)]


def _probability(s: _Sums) -> float:
    best = 0.0
    for mean, var, threshold in zip(s.mean, s.var, s.thresholds, strict=True):
        if var <= 0:
            best = max(best, 1.0 if mean >= threshold else 0.0)
        else:
            best = max(best, _NORMAL.cdf((mean - threshold) / math.sqrt(var)))
    return best


def _more_requests(s: _Sums, z: float) -> float | None:
    """The fewest further canary requests after which some point reaches M - z sd >= L (None: never)."""
    best: float | None = None
    for mean, var, m, v, threshold in zip(s.mean, s.var, s.mean_per_request, s.var_per_request, s.thresholds,
                                          strict=True):
        if m <= 0 or v <= 0:
            continue
        # y = sqrt(V + v x): (m/v) y^2 - z y + (M - m V / v - L) >= 0, y >= sqrt(V)
        a, c = m / v, mean - m * var / v - threshold
        disc = z * z - 4 * a * c
        y = max((z + math.sqrt(disc)) / (2 * a) if disc > 0 else 0.0, math.sqrt(var))
        x = max(0.0, (y * y - var) / v)
        best = x if best is None else min(best, x)
    return best


def power(cfg: JudgeConfig, data: MetricData) -> PowerRecord | None:
    """How well the evidence so far could detect cfg's required degradation (None when none is required)."""
    rho1, required, degradation = cfg.detect_rho, cfg.detect_power, cfg.detect_degradation
    if rho1 is None or required is None or degradation is None:
        return None
    judges = []
    if cfg.stable_tolerance is not None:
        judges.append(_stable(cfg, data, rho1))
    judges.append(_pre_rollout(cfg, data, rho1))
    sums = [s for s in judges if s is not None]
    if data.error or not sums:
        return PowerRecord(degradation=degradation, probability=0.0, required=required,
                           reason="no data to judge the power by yet")
    probability = max(_probability(s) for s in sums)
    if probability >= required:
        return PowerRecord(degradation=degradation, probability=round(probability, 4), required=required,
                           more_requests=0, more_seconds=0, reason="powered")
    z = _NORMAL.inv_cdf(required)
    more = [m for m in (_more_requests(s, z) for s in sums) if m is not None]
    if not more:
        return PowerRecord(degradation=degradation, probability=round(probability, 4), required=required,
                           reason="no judge can detect it: every tolerance is as loose as the degradation")
    latest = next((c.requests for c in reversed(data.canary) if c is not None and c.requests > 0), 0.0)
    rate = latest / cfg.interval_seconds
    requests = math.ceil(min(more))
    return PowerRecord(degradation=degradation, probability=round(probability, 4), required=required,
                       more_requests=requests, more_seconds=round(requests / rate, 1) if rate > 0 else None,
                       reason="needs more evidence")
