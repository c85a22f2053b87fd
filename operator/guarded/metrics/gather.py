"""One analysis step's queries: per metric, interval counts of canary and stable since the wave's
analysis began, the pre-rollout service counts, and the firing alerts that match the selector.
The PromQL is metrics.queries'; this module runs it and turns the answers into counts.

With a `SeenIntervals` memory (the operator passes one), a step asks Prometheus only for the intervals it
has not read yet, and asks a query that two metrics share (the requests counter) once."""

from __future__ import annotations

import math
import re
import threading
from array import array
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from guarded.api.analysis import Analysis, Latency
from guarded.api.common import parse_duration
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis import (
    SCRAPE_LAG_SECONDS,
    AnalysisObservation,
    Counts,
    MetricData,
    close_to_fail,
    effective_metrics,
    is_latency_guard,
    on_grid,
)
from guarded.core.clock import parse
from guarded.metrics.provider import MetricProvider, Series
from guarded.metrics.queries import (
    MetricQueries,
    Pair,
    PodSplit,
    ServiceSplit,
    alerts_query,
    buckets_query,
    lookback,
    metric_queries,
    pod_split,
    pod_sums,
    regex_literal,
    service_split,
)
from guarded.metrics.shared import SharedQueries
from guarded.metrics.under_way import UnderWay

SCRAPE_LAG = timedelta(seconds=SCRAPE_LAG_SECONDS)  # judgements are due when an interval can be read (core)
# Seconds of clock skew allowed between the API server (a pod's creationTimestamp) and Prometheus (its samples).
BORN_MARGIN = 5.0
MAX_STEPS = 10_000   # the newest interval is left out until its samples are in
# An interval that ended this long ago is read once and remembered: no later scrape changes its count.
FINAL_AFTER = timedelta(seconds=30)


class SeenIntervals:
    """Interval counts already read from Prometheus, per rollout, analysis (its uid and `since`) and query.

    An optimisation, never the source of truth: it is memory only, and an operator that restarts with it
    empty reads each wave's intervals from Prometheus again, as every step did before it existed. Only
    counts of intervals that ended FINAL_AFTER before the step are kept; a missing count (no series, a
    failed query) is never kept, so it is asked again and holds the wave as it did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per query, its steps' times and values as two arrays of doubles: 16 bytes a step, where a dict of
        # floats took about 100 (at N = 1,000 rollouts the dicts held 11.6 MiB, issue 11).
        self._rollouts: dict[tuple[str, str], tuple[str, dict[str, tuple[array[float], array[float]]]]] = {}

    def values(self, rollout: tuple[str, str], analysis: str, query: str) -> dict[float, float]:
        with self._lock:
            seen = self._rollouts.get(rollout)
            kept = seen[1].get(query) if seen is not None and seen[0] == analysis else None
        return {} if kept is None else dict(zip(*kept, strict=True))

    def keep(self, rollout: tuple[str, str], analysis: str, query: str, values: dict[float, float]) -> None:
        kept = (array("d", values.keys()), array("d", values.values()))
        with self._lock:
            seen = self._rollouts.get(rollout)
            if seen is None or seen[0] != analysis:  # a new wave's analysis: the old counts are of no use
                seen = (analysis, {})
                self._rollouts[rollout] = seen
            seen[1][query] = kept

    def forget(self, rollout: tuple[str, str]) -> None:
        with self._lock:
            self._rollouts.pop(rollout, None)

    def __len__(self) -> int:
        return len(self._rollouts)


class _Reader:
    """One step's range reads: each query once, from the first interval not yet seen; with `shared`, the
    per-pod ones from the queries all rollouts share (metrics/shared)."""

    def __init__(self, provider: MetricProvider, memory: SeenIntervals | None, rollout: tuple[str, str],
                 analysis: str, now: datetime, shared: SharedQueries | None = None,
                 born: Mapping[str, float] | None = None) -> None:
        self.provider, self.memory, self.rollout, self.analysis = provider, memory, rollout, analysis
        self.now, self.shared, self.born = now, shared, born or {}
        self.final = round((now - FINAL_AFTER).timestamp(), 3)
        self.answered: dict[str, Series] = {}

    def from_zero(self, pod: str, step: float, interval: float) -> bool:
        """Whether a series of `pod` first seen in the interval ending at `step` counts from zero: the pod was
        created (API server's clock, BORN_MARGIN for skew) within the lookback before the interval began, so
        that any earlier sample of it would have been within the lookback: the series' first sample is its
        first ever, and a new pod's counter starts at zero. A pod the operator does not see: not counted."""
        born = self.born.get(pod)
        return born is not None and born > step - interval - parse_duration(lookback(interval)) + BORN_MARGIN

    def _per_pod(self, split: PodSplit, steps_dt: list[datetime], first: int,
                 interval: float) -> tuple[dict[str, dict[float, float]] | None, str | None, int]:
        """Per pod, values at steps_dt[first:] (and the index they start at): from the shared queries when
        they can serve them all, else from a query of this rollout's own (at least two steps: a range whose
        start is its end answers nothing, metrics.prometheus)."""
        if self.shared is not None and split.shared:
            steps = [round(t.timestamp(), 3) for t in steps_dt[first:]]
            served, error = self.shared.per_pod(split.shared, self.rollout[0], steps, interval, self.now)
            if error is not None:
                return None, error, first
            if served is not None:
                pods: dict[str, dict[float, float]] = {}
                for t, values in served.items():
                    for pod, v in values.items():
                        pods.setdefault(pod, {})[t] = v
                return pods, None, first
        first = min(first, max(len(steps_dt) - 2, 0))
        grouped = self.provider.range_by(split.query, "pod", start=steps_dt[first], end=steps_dt[-1],
                                         step_seconds=interval)
        return (None, grouped.error, first) if grouped.error else (grouped.series, None, first)

    def range(self, query: str, steps_dt: list[datetime], interval: float) -> Series:
        if self.memory is None:
            series = self.provider.range(query, start=steps_dt[0], end=steps_dt[-1], step_seconds=interval)
            return Series(values={round(t, 3): v for t, v in series.values.items()}, error=series.error)
        if query in self.answered:
            return self.answered[query]
        known = self.memory.values(self.rollout, self.analysis, query)
        steps = [round(t.timestamp(), 3) for t in steps_dt]
        missing = [i for i, t in enumerate(steps) if t not in known]
        values = dict(known)
        if missing:
            # At least two steps: a range whose start is its end answers nothing (metrics.prometheus).
            first = min(missing[0], max(len(steps_dt) - 2, 0))
            series = self.provider.range(query, start=steps_dt[first], end=steps_dt[-1], step_seconds=interval)
            if series.error:
                return series
            fetched = {round(t, 3): v for t, v in series.values.items()}
            # A final interval without a value is kept as such (NaN): it stays no data, as a re-read would say.
            values.update({t: fetched.get(t, math.nan) for t in steps[first:]})
        self.memory.keep(self.rollout, self.analysis, query,
                         {t: v for t, v in values.items() if steps[0] <= t <= self.final})
        answer = Series(values={t: v for t, v in values.items() if t >= steps[0] and not math.isnan(v)})
        self.answered[query] = answer
        return answer

    def split(self, split: PodSplit, steps_dt: list[datetime], interval: float) -> tuple[Series, Series]:
        """Canary and stable from one per-pod query: each the sum over its pods (no pod with a value at a
        step: no value, as PromQL's sum over no series). Kept in memory as the two sums."""
        assert self.memory is not None
        parts = {"canary": split.canary, "stable": split.stable}
        keys = {part: f"{split.query}#{part}" for part in parts}
        if keys["canary"] in self.answered:
            return self.answered[keys["canary"]], self.answered[keys["stable"]]
        known = {part: self.memory.values(self.rollout, self.analysis, key) for part, key in keys.items()}
        steps = [round(t.timestamp(), 3) for t in steps_dt]
        missing = [i for i, t in enumerate(steps) if any(t not in k for k in known.values())]
        values = {part: dict(k) for part, k in known.items()}
        if missing:
            pods, error, first = self._per_pod(split, steps_dt, missing[0], interval)
            if pods is None:
                return Series(error=error), Series(error=error)
            for part, pattern in parts.items():
                sums = pod_sums(pods, pattern, lambda name, t: self.from_zero(name, t, interval))
                values[part].update({t: sums.get(t, math.nan) for t in steps[first:]})
        answers: list[Series] = []
        for part, key in keys.items():
            self.memory.keep(self.rollout, self.analysis, key,
                             {t: v for t, v in values[part].items() if steps[0] <= t <= self.final})
            answer = Series(values={t: v for t, v in values[part].items() if t >= steps[0] and not math.isnan(v)})
            self.answered[key] = answer
            answers.append(answer)
        return answers[0], answers[1]


def _counts(events: Series, requests: Series, steps: list[float]) -> tuple[Counts | None, ...]:
    out: list[Counts | None] = []
    for t in steps:
        n = requests.values.get(t)
        if n is None:
            out.append(None)          # no requests series: no data for this interval
            continue
        # An events counter that has no series yet (no 5xx ever) counts zero events, as long as
        # the requests counter of the same pods is there.
        out.append(Counts(events=max(events.values.get(t, 0.0), 0.0), requests=max(n, 0.0)))
    return tuple(out)


def grid_start(t: float, interval: float) -> float:
    """The start of the grid's interval that holds `t` (whole seconds off the grid)."""
    return math.floor(t / interval) * interval if on_grid(interval) else math.ceil(t)


def _steps(since_text: str, interval: float, now: datetime) -> list[datetime]:
    """The ends of the whole intervals since the analysis began that end before the newest scrape.

    On a grid common to every rollout with the same interval (its multiples since the epoch), so that one
    query serves them all (metrics/shared): the first interval may begin up to an interval before the
    analysis did, which only adds the stable pods' traffic of that moment (a canary pod's counts begin with
    its own series)."""
    # Off the grid (an interval of a fraction of a second, or not whole), whole seconds: the steps
    # Prometheus returns must line up with the ones judged here.
    since = datetime.fromtimestamp(grid_start(parse(since_text).timestamp(), interval), tz=UTC)
    n_steps = int((now - SCRAPE_LAG - since).total_seconds() // interval)
    if n_steps > MAX_STEPS:  # Prometheus answers at most 11,000 points per series
        since += timedelta(seconds=interval * (n_steps - MAX_STEPS))
        n_steps = MAX_STEPS
    return [since + timedelta(seconds=interval * (i + 1)) for i in range(max(n_steps, 0))]


def _pre_rollout_shared(shared: SharedQueries, splits: tuple[ServiceSplit, ServiceSplit], namespace: str,
                        at: datetime, now: datetime, interval: float) -> MetricData:
    """The same from the queries every rollout starting in the same interval shares (metrics/shared)."""
    sums: list[float | None] = []
    for split in splits:
        pods, error = shared.instant_per_pod(split.shared, namespace, at.timestamp(), now, interval)
        if pods is None:
            return MetricData(error=error)
        matched = [v for pod, v in sorted(pods.items()) if re.fullmatch(split.pods, pod)]
        sums.append(sum(matched) if matched else None)
    events, requests = sums
    if requests is None:
        return MetricData()
    return MetricData(pre_rollout=Counts(events=events or 0.0, requests=requests))


def _pre_rollout(provider: MetricProvider, queries: Pair, at: datetime) -> MetricData:
    """The service's counts over the window before the rollout started (none without requests)."""
    events = provider.instant(queries.events, at=at)
    requests = provider.instant(queries.requests, at=at)
    if events.error or requests.error:
        return MetricData(error=events.error or requests.error)
    if not requests.values:
        return MetricData()
    return MetricData(pre_rollout=Counts(events=next(iter(events.values.values()), 0.0),
                                         requests=next(iter(requests.values.values()))))


def _intervals(reader: _Reader, queries: MetricQueries, steps_dt: list[datetime], interval: float,
               pre: Counts | None, splits: tuple[PodSplit, PodSplit] | None = None) -> MetricData:
    """Canary and stable counts per interval; the first failed query is the metric's error. With `splits`
    (the events and requests per pod) canary and stable come from one query each."""
    answers = []
    if splits is not None and reader.memory is not None:
        for split in splits:
            canary, stable = reader.split(split, steps_dt, interval)
            if canary.error:
                return MetricData(error=canary.error)
            answers += [canary, stable]
        answers = [answers[0], answers[2], answers[1], answers[3]]
    else:
        for query in (queries.canary.events, queries.canary.requests, queries.stable.events,
                      queries.stable.requests):
            series = reader.range(query, steps_dt, interval)
            if series.error:
                return MetricData(error=series.error)
            answers.append(series)
    steps = [round(t.timestamp(), 3) for t in steps_dt]
    canary_events, canary_requests, stable_events, stable_requests = answers
    return MetricData(canary=_counts(canary_events, canary_requests, steps),
                      stable=_counts(stable_events, stable_requests, steps), pre_rollout=pre)


def _bound(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def latency_bucket(provider: MetricProvider, latency: Latency, *, namespace: str, target: str,
                   shared: SharedQueries | None = None, now: datetime | None = None) -> tuple[str | None, str | None]:
    """A regex matching every `le` of the histogram's buckets equal to spec.analysis.latency.threshold, as its
    series spell it ("0.5", "0.50", "500"; pods of two releases may spell it two ways: `0\\.5|0\\.50`), or an
    error naming the field. No such bucket: no data, never zero slow requests."""
    query = buckets_query(latency.histogram, namespace=namespace, target=target)
    found = provider.labels(query) if shared is None or now is None else shared.labels(query, now, BUCKETS_FRESH)
    if found.error:
        return None, found.error
    bounds = sorted({item["le"] for item in found.items if "le" in item}, key=lambda t: _bound(t) or math.inf)
    if not bounds:
        return None, (f"spec.analysis.latency.histogram: no {latency.histogram}_bucket series for the service's pods")
    want = parse_duration(latency.threshold) * (1000.0 if latency.unit == "milliseconds" else 1.0)
    equal = [text for text in bounds
             if (value := _bound(text)) is not None and math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-12)]
    if equal:
        return "|".join(regex_literal(text) for text in sorted(equal)), None
    return None, (f"spec.analysis.latency.threshold {latency.threshold} is no bucket bound of {latency.histogram} "
                  f"({want:g} {latency.unit}; le: {', '.join(bounds)}): set it to one of them")


# With shared queries, the firing alerts are asked once for every rollout, at most once a second, and each
# rollout keeps those its selector matches; a histogram's bucket bounds are asked once a minute.
ALERTS_FRESH = 1.0
BUCKETS_FRESH = 60.0


def _alerts(provider: MetricProvider, analysis: Analysis, shared: SharedQueries | None,
            now: datetime) -> tuple[tuple[str, ...], str | None]:
    if analysis.alerts is None:
        return (), None
    if shared is None:
        found = provider.labels(alerts_query(analysis.alerts))
    else:
        everything = shared.labels(alerts_query(None), now, ALERTS_FRESH)
        want = analysis.alerts.match_labels.items()
        found = replace(everything, items=tuple(i for i in everything.items if all(i.get(k) == v for k, v in want)))
    return tuple(sorted({item.get("alertname", "?") for item in found.items})), found.error


def gather(provider: MetricProvider, spec: GuardedRolloutSpec, status: GuardedRolloutStatus, *,
           namespace: str, now: datetime, memory: SeenIntervals | None = None,
           rollout: tuple[str, str, str | None] | None = None,
           shared: SharedQueries | None = None, born: Mapping[str, float] | None = None) -> AnalysisObservation:
    """`memory` and `rollout` (namespace, name, uid): read only the intervals not yet seen (SeenIntervals);
    `shared` (with them): the per-pod queries, the alerts and the bucket bounds from the queries every
    rollout shares (metrics/shared). `born`: the namespace's pods' creation times (epoch seconds), for
    counting a new pod from zero (_Reader.from_zero)."""
    analysis = spec.analysis
    assert analysis is not None and status.analysis.since is not None
    interval = parse_duration(analysis.interval)
    steps_dt = _steps(status.analysis.since, interval, now)
    namespace_name = (rollout[0], rollout[1]) if rollout else (namespace, "")
    if not rollout:
        memory = shared = None
    reader = _Reader(provider, memory, namespace_name,
                     f"{rollout[2] if rollout else ''}@{status.analysis.since}@{analysis.interval}", now,
                     shared if memory is not None else None, born)
    under_way = UnderWay.of(provider, reader.from_zero, interval=interval, now=now,
                            last_step=steps_dt[-1] if steps_dt else None, close=close_to_fail(status, interval))
    recorded_pre = {p.metric: Counts(events=p.events, requests=p.requests) for p in status.analysis.pre_rollout}

    metrics: dict[str, MetricData] = {}
    for metric in effective_metrics(analysis):
        le = None
        if is_latency_guard(metric, analysis):
            assert analysis.latency is not None
            le, problem = latency_bucket(provider, analysis.latency, namespace=namespace, target=spec.target.name,
                                         shared=shared, now=now)
            if problem is not None:
                metrics[metric.name] = MetricData(error=problem)
                continue
        queries = metric_queries(metric, namespace=namespace, target=spec.target.name, interval=analysis.interval,
                                 pre_rollout_window=analysis.pre_rollout_window, le=le)
        data = MetricData(pre_rollout=recorded_pre.get(metric.name))
        if data.pre_rollout is None and metric.pre_rollout_tolerance is not None and status.started_at:
            started = parse(status.started_at)
            pre = [service_split(t, target=spec.target.name, window=analysis.pre_rollout_window, le=le)
                   for t in (metric.events, metric.requests)]
            if shared is not None and pre[0] is not None and pre[1] is not None and on_grid(interval):
                # Shared by the rollouts that started in the same interval: the window ends at its start, up to
                # an interval before this rollout started. A service with no counts there yet (its traffic
                # began within that interval) is asked again at the moment it started, as without sharing.
                at = datetime.fromtimestamp(grid_start(started.timestamp(), interval), tz=UTC)
                data = _pre_rollout_shared(shared, (pre[0], pre[1]), namespace, at, now, interval)
                if data.error is None and data.pre_rollout is None:
                    data = _pre_rollout(provider, queries.pre_rollout, started)
            else:
                data = _pre_rollout(provider, queries.pre_rollout, started)
        if data.error is None and steps_dt:
            split = [pod_split(t, namespace=namespace, target=spec.target.name, interval=analysis.interval, le=le)
                     for t in (metric.events, metric.requests)]
            data = _intervals(reader, queries, steps_dt, interval, data.pre_rollout,
                              (split[0], split[1]) if split[0] and split[1] else None)
            if under_way is not None and data.error is None:
                data = under_way.add(data, metric.events, metric.requests, namespace=namespace,
                                     target=spec.target.name, le=le)
        metrics[metric.name] = data
    alerts, alerts_error = _alerts(provider, analysis, shared, now)
    return AnalysisObservation(metrics=metrics, alerts=alerts, alerts_error=alerts_error)
