"""A close look's interval under way (core.analysis.close_to_fail): the counts from the end of the newest whole
interval the grid read up to a moment whose scrapes are all in Prometheus, read for one rollout.

Every counter of a look is cut at that one moment (`cut`, SCRAPE_LAG_SECONDS before the look), by instant
queries of the per-pod form over the window since the interval began: two queries of one look (orders, then
requests) never see a scrape apart, as queries at a step still to come would (a scrape landing between them
would count in one counter and not the other). The grid's shared queries and the memory of intervals read
(metrics/gather) are not touched: the interval is read again as a whole when it has ended. Only the built-in
guards' templates (the per-pod form); a template of one's own is judged on whole intervals only."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from guarded.core.analysis import SCRAPE_LAG_SECONDS, Counts, MetricData
from guarded.metrics.provider import Grouped, MetricProvider
from guarded.metrics.queries import PodSplit, lookback, pod_split, pod_sums

MIN_WINDOW_MS = 100   # a look sooner after the grid's step reads nothing new


class UnderWay:
    def __init__(self, provider: MetricProvider, from_zero: Callable[[str, float, float], bool], *,
                 start: float, window_ms: int, interval: float) -> None:
        self.provider, self.from_zero, self.interval = provider, from_zero, interval
        self.start, self.window_ms = start, window_ms
        self.cut = datetime.fromtimestamp(start + window_ms / 1000, tz=UTC)
        self.answers: dict[str, Grouped] = {}

    @classmethod
    def of(cls, provider: MetricProvider, from_zero: Callable[[str, float, float], bool], *,
           last_step: datetime | None, interval: float, now: datetime, close: bool) -> UnderWay | None:
        """The interval after `last_step` (the newest whole one read), when looking close and some of it can be
        read (none before the first whole interval: gather then reads no counts at all)."""
        if not close or last_step is None:
            return None
        start = last_step.timestamp()
        window_ms = math.floor(round((now.timestamp() - SCRAPE_LAG_SECONDS - start) * 1000, 2))
        if window_ms < MIN_WINDOW_MS:
            return None
        return cls(provider, from_zero, start=start, window_ms=window_ms, interval=interval)

    def _read(self, template: str, namespace: str, target: str, le: str | None) -> tuple[PodSplit, Grouped] | None:
        split = pod_split(template, namespace=namespace, target=target, interval=f"{self.window_ms}ms", le=le,
                          look_back=lookback(self.interval))   # the grid's: first values count alike (from_zero)
        if split is None:
            return None
        if split.query not in self.answers:   # the requests counter two guards share: one query
            self.answers[split.query] = self.provider.instant_by(split.query, "pod", at=self.cut)
        return split, self.answers[split.query]

    def _sums(self, split: PodSplit, grouped: Grouped) -> tuple[float | None, float | None]:
        """Canary and stable: each the sum over its pods (None: no pod of it has a value)."""
        step = self.start + self.interval   # the interval's end on the grid, as from_zero counts

        def counts_first(name: str, _at: float) -> bool:
            return self.from_zero(name, step, self.interval)

        canary, stable = (pod_sums(grouped.series, pattern, counts_first) for pattern in (split.canary, split.stable))
        return (sum(canary.values()) if canary else None), (sum(stable.values()) if stable else None)

    def add(self, data: MetricData, events: str, requests: str, *, namespace: str, target: str,
            le: str | None) -> MetricData:
        """`data` with the interval under way appended if its canary served in it; else `data` as it was (also
        when a query failed: the look then judges what the grid read, which holds any failure of its own)."""
        read = [self._read(t, namespace, target, le) for t in (events, requests)]
        if read[0] is None or read[1] is None or read[0][1].error or read[1][1].error:
            return data
        (ec, es), (nc, ns) = self._sums(*read[0]), self._sums(*read[1])
        if nc is None or nc <= 0:
            return data
        stable = Counts(events=max(es or 0.0, 0.0), requests=max(ns, 0.0)) if ns is not None else None
        return replace(data, canary=(*data.canary, Counts(events=max(ec or 0.0, 0.0), requests=nc)),
                       stable=(*data.stable, stable))
