"""One analysis step's queries: per metric, interval counts of canary and stable since the wave's
analysis began, the pre-rollout service counts, and the firing alerts that match the selector."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from guarded.api.common import parse_duration
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis import (
    AnalysisObservation,
    effective_metrics,
    escape_label_value,
    render,
    selectors,
)
from guarded.core.clock import parse
from guarded.core.judges import Counts, MetricData
from guarded.metrics.provider import MetricProvider, Series

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


def gather(provider: MetricProvider, spec: GuardedRolloutSpec, status: GuardedRolloutStatus, *,
           namespace: str, now: datetime) -> AnalysisObservation:
    analysis = spec.analysis
    assert analysis is not None and status.analysis.since is not None
    interval = parse_duration(analysis.interval)
    window = f"{analysis.interval}"
    # Whole seconds: the client library sends range bounds as integer Unix times, and the steps
    # Prometheus returns must line up with the ones judged here.
    since = datetime.fromtimestamp(math.ceil(parse(status.analysis.since).timestamp()), tz=UTC)
    end = now - SCRAPE_LAG
    n_steps = int((end - since).total_seconds() // interval)
    if n_steps > MAX_STEPS:  # Prometheus answers at most 11,000 points per series
        since += timedelta(seconds=interval * (n_steps - MAX_STEPS))
        n_steps = MAX_STEPS
    steps_dt = [since + timedelta(seconds=interval * (i + 1)) for i in range(max(n_steps, 0))]
    steps = [round(t.timestamp(), 3) for t in steps_dt]
    sel = selectors(namespace, spec.target.name)
    recorded_pre = {p.metric: Counts(events=p.events, requests=p.requests) for p in status.analysis.pre_rollout}

    metrics: dict[str, MetricData] = {}
    for metric in effective_metrics(analysis):
        def q(template: str, selector: str, rng: str = window) -> str:
            return render(template, selector=selector, interval=rng, namespace=namespace, target=spec.target.name)

        pre = recorded_pre.get(metric.name)
        if pre is None and metric.pre_rollout_tolerance is not None and status.started_at:
            at = parse(status.started_at)
            pre_window = analysis.pre_rollout_window
            pe = provider.instant(q(metric.events, sel.service, pre_window), at=at)
            pr = provider.instant(q(metric.requests, sel.service, pre_window), at=at)
            if pe.error or pr.error:
                metrics[metric.name] = MetricData(error=pe.error or pr.error)
                continue
            if pr.values:
                pre = Counts(events=next(iter(pe.values.values()), 0.0), requests=next(iter(pr.values.values())))
        if not steps:
            metrics[metric.name] = MetricData(pre_rollout=pre)
            continue
        start, stop = steps_dt[0], steps_dt[-1]
        results = {}
        for key, template, selector in (("ce", metric.events, sel.canary), ("cr", metric.requests, sel.canary),
                                        ("se", metric.events, sel.stable), ("sr", metric.requests, sel.stable)):
            series = provider.range(q(template, selector), start=start, end=stop, step_seconds=interval)
            if series.error:
                break
            results[key] = Series(values={round(t, 3): v for t, v in series.values.items()})
        else:
            metrics[metric.name] = MetricData(
                canary=_counts(results["ce"], results["cr"], steps),
                stable=_counts(results["se"], results["sr"], steps),
                pre_rollout=pre,
            )
            continue
        metrics[metric.name] = MetricData(error=series.error)

    alerts: tuple[str, ...] = ()
    alerts_error = None
    if analysis.alerts is not None:
        matchers = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(analysis.alerts.match_labels.items()))
        found = provider.labels(f'ALERTS{{alertstate="firing",{matchers}}}')
        alerts_error = found.error
        alerts = tuple(sorted({item.get("alertname", "?") for item in found.items}))
    return AnalysisObservation(metrics=metrics, alerts=alerts, alerts_error=alerts_error)
