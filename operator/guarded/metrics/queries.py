"""PromQL for one analysis step: names escaped into label matchers, pods selected by name, a metric's
templates rendered for the canary, the stable and the whole service, and the firing-alerts query."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from guarded.api.analysis import AlertSelector, Metric
from guarded.api.common import parse_duration

# Pod names of a Deployment's pods: <deployment>-<replicaset hash>-<pod suffix>.
_POD_SUFFIX = "[a-z0-9]{1,10}-[a-z0-9]{5}"


@dataclass(frozen=True)
class Selectors:
    canary: str
    stable: str
    service: str


@dataclass(frozen=True, kw_only=True)
class Pair:
    """The two queries of one ratio: the events counter's increase and the requests counter's."""

    events: str
    requests: str


@dataclass(frozen=True, kw_only=True)
class MetricQueries:
    """One metric's queries: canary and stable per analysis interval, the service over the pre-rollout window."""

    canary: Pair
    stable: Pair
    pre_rollout: Pair


def escape_label_value(value: str) -> str:
    """A PromQL string literal's content: backslashes and quotes escaped, no newlines."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_literal(value: str) -> str:
    """A regex matching exactly `value` (not yet escaped for a PromQL string literal)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", value)


def escape_regex(value: str) -> str:
    return escape_label_value(regex_literal(value))


def selectors(namespace: str, target: str) -> Selectors:
    ns = f'namespace="{escape_label_value(namespace)}"'
    name = escape_regex(target)
    return Selectors(
        canary=f'{ns},pod=~"{name}-canary-{_POD_SUFFIX}"',
        stable=f'{ns},pod=~"{name}-{_POD_SUFFIX}"',
        service=f'{ns},pod=~"{name}-(canary-)?{_POD_SUFFIX}"',
    )


def lookback(window_seconds: float) -> str:
    """How far back a template's `{{lookback}}` looks for the last sample before a window: four windows and at
    least five minutes (Prometheus's own lookback), so that failed scrapes (stale markers) lose no counts, and
    only a series that Prometheus has not seen for that long counts as new (from zero)."""
    return f"{max(300, math.ceil(4 * window_seconds))}s"


def render(template: str, *, selector: str, interval: str, namespace: str, target: str, le: str | None = None,
           look_back: str | None = None) -> str:
    values = {"selector": selector, "interval": interval, "namespace": escape_label_value(namespace),
              "target": escape_label_value(target),
              "lookback": look_back or lookback(parse_duration(interval))}
    if le is not None:   # the latency guard's bucket bound: a regex of every spelling the series use
        values["le"] = escape_label_value(le)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template)


def metric_queries(metric: Metric, *, namespace: str, target: str, interval: str,
                   pre_rollout_window: str, le: str | None = None) -> MetricQueries:
    sel = selectors(namespace, target)

    def pair(selector: str, window: str) -> Pair:
        def one(template: str) -> str:
            return render(template, selector=selector, interval=window, namespace=namespace, target=target, le=le)
        return Pair(events=one(metric.events), requests=one(metric.requests))

    return MetricQueries(canary=pair(sel.canary, interval), stable=pair(sel.stable, interval),
                         pre_rollout=pair(sel.service, pre_rollout_window))


def buckets_query(histogram: str, *, namespace: str, target: str) -> str:
    """The bucket bounds (le) the service's pods export for a histogram, one series per bound."""
    return f"group by (le) ({histogram}_bucket{{{selectors(namespace, target).service}}})"


def alerts_query(alerts: AlertSelector) -> str:
    """The firing alerts that carry every label the selector names."""
    matchers = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(alerts.match_labels.items()))
    return f'ALERTS{{alertstate="firing",{matchers}}}'
