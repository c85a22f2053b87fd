"""Random draws from a ``random.Random``, so that one seed fixes every count the simulator exports.

numpy is not a dependency of the project, and the simulator needs only three kinds of draw. They are
exact where counts are small, which is the common case (tens of requests per pod per tick), and use
normal approximations where counts are large, where the difference is far below the noise that the
operator's judges are built to tolerate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

# Above this mean a Poisson or binomial draw uses the normal approximation.
NORMAL_ABOVE = 60.0
# Means of in-bucket latencies are computed with expm1; beyond this its argument would overflow.
_MAX_EXPONENT = 700.0


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson(lam) draw: by inversion (one uniform) for small lam, else the normal approximation."""
    if lam <= 0:
        return 0
    if lam > NORMAL_ABOVE:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    u = rng.random()
    k, pmf = 0, math.exp(-lam)
    cdf = pmf
    # The bound on k only guards against a uniform within rounding of 1.0 never being reached.
    while u > cdf and k < 10 * NORMAL_ABOVE:
        k += 1
        pmf *= lam / k
        cdf += pmf
    return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw: by inversion while n*p is small, else the normal approximation (clamped)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:  # inversion is fastest and most accurate for the rarer outcome
        return n - binomial(rng, n, 1.0 - p)
    mean = n * p
    if mean > NORMAL_ABOVE / 2:
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))))
    # (1-p)^n >= exp(-2 n p) > 1e-27 here, so the recursion never starts from an underflow.
    q = 1.0 - p
    u = rng.random()
    k, pmf = 0, q**n
    cdf = pmf
    while u > cdf and k < n:
        pmf *= (p / q) * (n - k) / (k + 1)
        k += 1
        cdf += pmf
    return k


def _mean_within(width: float, mean: float) -> float:
    """Mean of an exponential(mean) latency given it fell in a bucket of `width`, measured from the bucket's start.

    The exponential is memoryless, so this does not depend on where the bucket starts:
    E[X | X < w] = m - w / (e^(w/m) - 1).
    """
    x = width / mean
    if x >= _MAX_EXPONENT:
        return mean
    return mean - width / math.expm1(x)


def latency_buckets(rng: random.Random, n: int, mean_s: float, bounds: Sequence[float]) -> tuple[list[int], float]:
    """Split `n` requests with exponential(mean_s) latencies into histogram buckets.

    Returns the per-bucket (not cumulative) counts, one per bound plus the +Inf bucket, and the sum
    of the latencies. Buckets are drawn in order as binomials conditional on the requests not yet
    placed; by memorylessness the chance that a latency above `lower` stays below `upper` is
    1 - exp(-(upper - lower) / mean). So the counts always add up to `n`, and the sum is the
    expected sum given those counts (each request at its bucket's conditional mean), which keeps
    _sum consistent with the buckets without a draw per request.
    """
    mean_s = max(mean_s, 1e-9)
    counts: list[int] = []
    remaining, lower, total = n, 0.0, 0.0
    for upper in bounds:
        width = upper - lower
        c = binomial(rng, remaining, -math.expm1(-width / mean_s)) if remaining else 0
        counts.append(c)
        total += c * (lower + _mean_within(width, mean_s))
        remaining -= c
        lower = upper
    counts.append(remaining)
    total += remaining * (lower + mean_s)
    return counts, total
