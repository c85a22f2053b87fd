"""One analysis step's queries: per metric, interval counts of canary and stable since the wave's
analysis began, the pre-rollout service counts, and the firing alerts that match the selector.
The PromQL is metrics.queries'; this module runs it and turns the answers into counts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from guarded.api.analysis import Analysis, Latency
from guarded.api.common import parse_duration
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis import AnalysisObservation, Counts, MetricData, effective_metrics, is_latency_guard
from guarded.core.clock import parse
from guarded.metrics.provider import MetricProvider, Series
from guarded.metrics.queries import MetricQueries, Pair, alerts_query, buckets_query, metric_queries, regex_literal

SCRAPE_LAG = timedelta(seconds=2)
MAX_STEPS = 10_000   # the newest interval is left out until its samples are in


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


def _steps(since_text: str, interval: float, now: datetime) -> list[datetime]:
    """The ends of the whole intervals since the analysis began that end before the newest scrape."""
    # Whole seconds: the client library sends range bounds as integer Unix times, and the steps
    # Prometheus returns must line up with the ones judged here.
    since = datetime.fromtimestamp(math.ceil(parse(since_text).timestamp()), tz=UTC)
    n_steps = int((now - SCRAPE_LAG - since).total_seconds() // interval)
    if n_steps > MAX_STEPS:  # Prometheus answers at most 11,000 points per series
        since += timedelta(seconds=interval * (n_steps - MAX_STEPS))
        n_steps = MAX_STEPS
    return [since + timedelta(seconds=interval * (i + 1)) for i in range(max(n_steps, 0))]


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


def _intervals(provider: MetricProvider, queries: MetricQueries, steps_dt: list[datetime], interval: float,
               pre: Counts | None) -> MetricData:
    """Canary and stable counts per interval; the first failed query is the metric's error."""
    answers = []
    for query in (queries.canary.events, queries.canary.requests, queries.stable.events, queries.stable.requests):
        series = provider.range(query, start=steps_dt[0], end=steps_dt[-1], step_seconds=interval)
        if series.error:
            return MetricData(error=series.error)
        answers.append(Series(values={round(t, 3): v for t, v in series.values.items()}))
    steps = [round(t.timestamp(), 3) for t in steps_dt]
    canary_events, canary_requests, stable_events, stable_requests = answers
    return MetricData(canary=_counts(canary_events, canary_requests, steps),
                      stable=_counts(stable_events, stable_requests, steps), pre_rollout=pre)


def _bound(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def latency_bucket(provider: MetricProvider, latency: Latency, *, namespace: str,
                   target: str) -> tuple[str | None, str | None]:
    """A regex matching every `le` of the histogram's buckets equal to spec.analysis.latency.threshold, as its
    series spell it ("0.5", "0.50", "500"; pods of two releases may spell it two ways: `0\\.5|0\\.50`), or an
    error naming the field. No such bucket: no data, never zero slow requests."""
    found = provider.labels(buckets_query(latency.histogram, namespace=namespace, target=target))
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


def _alerts(provider: MetricProvider, analysis: Analysis) -> tuple[tuple[str, ...], str | None]:
    if analysis.alerts is None:
        return (), None
    found = provider.labels(alerts_query(analysis.alerts))
    return tuple(sorted({item.get("alertname", "?") for item in found.items})), found.error


def gather(provider: MetricProvider, spec: GuardedRolloutSpec, status: GuardedRolloutStatus, *,
           namespace: str, now: datetime) -> AnalysisObservation:
    analysis = spec.analysis
    assert analysis is not None and status.analysis.since is not None
    interval = parse_duration(analysis.interval)
    steps_dt = _steps(status.analysis.since, interval, now)
    recorded_pre = {p.metric: Counts(events=p.events, requests=p.requests) for p in status.analysis.pre_rollout}

    metrics: dict[str, MetricData] = {}
    for metric in effective_metrics(analysis):
        le = None
        if is_latency_guard(metric, analysis):
            assert analysis.latency is not None
            le, problem = latency_bucket(provider, analysis.latency, namespace=namespace, target=spec.target.name)
            if problem is not None:
                metrics[metric.name] = MetricData(error=problem)
                continue
        queries = metric_queries(metric, namespace=namespace, target=spec.target.name, interval=analysis.interval,
                                 pre_rollout_window=analysis.pre_rollout_window, le=le)
        data = MetricData(pre_rollout=recorded_pre.get(metric.name))
        if data.pre_rollout is None and metric.pre_rollout_tolerance is not None and status.started_at:
            data = _pre_rollout(provider, queries.pre_rollout, parse(status.started_at))
        if data.error is None and steps_dt:
            data = _intervals(provider, queries, steps_dt, interval, data.pre_rollout)
        metrics[metric.name] = data
    alerts, alerts_error = _alerts(provider, analysis)
    return AnalysisObservation(metrics=metrics, alerts=alerts, alerts_error=alerts_error)
