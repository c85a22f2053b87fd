"""Wave arithmetic: how many canary pods a wave runs, and what weight that is.

Rounding rule (documented in docs/waves.md): a weight wave runs floor(total * weight / 100)
canary pods, but never fewer than one; a replicas wave runs that many, at most `total`. So the
canary's share of ready pods never exceeds max(weight, one pod's share) while a wave runs,
because the stable is lowered only to `total - canary` and only after the canary is Ready.
"""

from __future__ import annotations

import math

from guarded.api.rollout import Wave


def canary_replicas(wave: Wave, total: int) -> int:
    if total <= 0:
        return 0
    if wave.replicas is not None:
        return min(wave.replicas, total)
    assert wave.weight is not None
    return min(total, max(1, (total * wave.weight) // 100))


def routed_weight(wave: Wave, total: int) -> int:
    """With traffic routing: the canary backendRef's weight (percent, 1..100) this wave sets. A replicas wave
    is its pods' share of the target's count, rounded, at least 1."""
    if wave.weight is not None:
        return wave.weight
    assert wave.replicas is not None
    return min(100, max(1, round(100 * min(wave.replicas, total) / total))) if total > 0 else 0


def routed_canary_replicas(wave: Wave, total: int) -> int:
    """With traffic routing: canary pods to carry the wave's weight at the stable's load per pod,
    ceil(total * weight / 100), at least 1 (the stable keeps all `total` of its own)."""
    if total <= 0:
        return 0
    if wave.replicas is not None:
        return min(wave.replicas, total)
    assert wave.weight is not None
    return min(total, max(1, math.ceil(total * wave.weight / 100)))


def weight_bound(wave: Wave, total: int) -> float:
    """The largest canary share of ready pods (0..1) this wave may ever show."""
    if total <= 0:
        return 0.0
    nominal = (wave.weight / 100) if wave.weight is not None else canary_replicas(wave, total) / total
    return max(nominal, 1 / total)


def percent(canary_ready: int, stable_ready: int) -> int:
    total = canary_ready + stable_ready
    return 0 if total == 0 else round(100 * canary_ready / total)
