"""The analysis queries every rollout shares (metrics/shared), one set per Prometheus, and the hints that put
a rollout's namespace into them before it asks: the rollouts the watch shows entering or under an analysis,
and those that started in the same interval (their pre-rollout counts)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from guarded.api.common import parse_duration
from guarded.api.rollout import PLURAL
from guarded.api.stages import Stage
from guarded.core.clock import parse
from guarded.kube.cache import WatchCache
from guarded.metrics.gather import grid_start
from guarded.metrics.provider import MetricProvider
from guarded.metrics.shared import SharedQueries

_SHARED: list[SharedQueries] = []


def shared_queries(provider: MetricProvider, cache: WatchCache | None) -> SharedQueries:
    """The queries every rollout's analysis shares (metrics/shared), one set per provider; the watch cache tells
    which namespaces will ask."""
    if not _SHARED or _SHARED[0].provider is not provider:
        _SHARED[:] = [SharedQueries(provider, hint=None if cache is None else functools.partial(analysing, cache),
                                    starting=None if cache is None else functools.partial(starting, cache))]
    return _SHARED[0]


def _namespaces(cache: WatchCache, interval: float, wanted: Callable[[dict[str, Any]], bool]) -> set[str]:
    """Namespaces of the rollouts (as the watch saw them) with an analysis of this interval that `wanted` takes
    (a status it cannot read is not taken)."""
    out = set()
    for obj in cache.objects(PLURAL):
        analysis = (obj.get("spec") or {}).get("analysis")
        if not analysis:
            continue
        try:
            if parse_duration(analysis.get("interval", "")) == interval and wanted(obj.get("status") or {}):
                out.add(str((obj.get("metadata") or {}).get("namespace")))
        except (ValueError, TypeError):
            continue
    return out


def analysing(cache: WatchCache, interval: float) -> set[str]:
    """Namespaces of the rollouts whose analysis of this interval is under way or begins with their canary's
    next wave."""
    return _namespaces(cache, interval, lambda status: status.get("stage") in _ANALYSING)


def starting(cache: WatchCache, at: float, interval: float) -> set[str]:
    """Namespaces of the rollouts with an analysis of this interval that started in the grid interval beginning
    at `at` and have not recorded their pre-rollout counts: they ask for them at `at`."""
    def started_then(status: dict[str, Any]) -> bool:
        started = status.get("startedAt")
        return (bool(started) and not (status.get("analysis") or {}).get("preRollout")
                and round(grid_start(parse(started).timestamp(), interval), 3) == round(at, 3))
    return _namespaces(cache, interval, started_then)


_ANALYSING = frozenset({str(s) for s in (Stage.SCALE_CANARY, Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE)})
