"""PromQL for one analysis step: names escaped into label matchers, pods selected by name, a metric's
templates rendered for the canary, the stable and the whole service, and the firing-alerts query."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
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
    least 30 s, so that a few failed scrapes (stale markers) lose no counts."""
    return f"{max(30, math.ceil(4 * window_seconds))}s"


def render(template: str, *, selector: str, interval: str, namespace: str, target: str, le: str | None = None,
           look_back: str | None = None) -> str:
    values = {"selector": selector, "interval": interval, "namespace": escape_label_value(namespace),
              "target": escape_label_value(target),
              "lookback": look_back or lookback(parse_duration(interval))}
    if le is not None:   # the latency guard's bucket bound: a regex of every spelling the series use
        values["le"] = escape_label_value(le)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template)


# The built-in templates (core/analysis/selection._increase): one counter's exact increase, summed over the
# selected pods: sum(clamp_min(S - (last_over_time(S[lookback] offset interval) or min_over_time(S[interval])),
# 0)); the form without `or min_over_time` (documented before it) is recognised too.
_SERIES = r"[A-Za-z_:][A-Za-z0-9_:]*\{\{\{selector\}\}(?:[^{}]|\{\{le\}\})*\}"
_LAST = r"last_over_time\((?P=series)\[\{\{lookback\}\}\] offset \{\{interval\}\}\)"
_EXACT = (r"sum\((?P<body>clamp_min\((?P<series>" + _SERIES + r") - (?:\(" + _LAST
          + r" or min_over_time\((?P=series)\[\{\{interval\}\}\]\)\)|" + _LAST + r"), 0\))\)")
_SUMMED_INCREASE = re.compile("^" + _EXACT + "$")
_EXACT_ANYWHERE = re.compile(_EXACT)


def metric_queries(metric: Metric, *, namespace: str, target: str, interval: str,
                   pre_rollout_window: str, le: str | None = None) -> MetricQueries:
    sel = selectors(namespace, target)

    def pair(selector: str, window: str) -> Pair:
        def one(template: str) -> str:
            return render(template, selector=selector, interval=window, namespace=namespace, target=target, le=le)
        return Pair(events=one(metric.events), requests=one(metric.requests))

    def pre(template: str) -> str:
        # The built-in exact form (in the guards' templates, the latency guard's two as well) asks a window
        # minutes long as increase(): it counts the pods that started in the window, and its extrapolation is
        # negligible over minutes.
        template = _EXACT_ANYWHERE.sub(lambda m: "sum(increase(" + m["series"] + "[{{interval}}]))", template)
        return render(template, selector=sel.service, interval=pre_rollout_window, namespace=namespace,
                      target=target, le=le)

    return MetricQueries(canary=pair(sel.canary, interval), stable=pair(sel.stable, interval),
                         pre_rollout=Pair(events=pre(metric.events), requests=pre(metric.requests)))




# A pod's counts from zero: the answer of a per-pod query holds, beside each pod's increase, the first value of
# each series first seen in the interval, under the pod's name and this suffix (no pod name holds a "/").
FIRST = "/first"


@dataclass(frozen=True, kw_only=True)
class PodSplit:
    """One query for canary and stable at once: the increase per pod of the whole service (`query`), which
    the operator sums over the pods each regex (Python, fully matched; the same as the PromQL selectors')
    names. Under `<pod>/first` (FIRST) the answer also holds, per canary pod, the first value of each series
    that had no sample within the lookback before the interval: what a pod served before its first scrape, which
    the increase cannot count, and which the operator adds only for a pod created so recently that the
    lookback reaches back to its creation (metrics/gather: then it is the series' first sample ever, and a
    new process's counter starts at zero)."""

    query: str
    canary: str
    stable: str
    shared: str = ""   # the same by (namespace, pod) over the namespaces metrics/shared.NAMESPACES stands for


SHARED_NAMESPACES = "<<namespaces>>"


def pod_sums(per_pod: Mapping[str, Mapping[float, float]], pattern: str,
             counts_first: Callable[[str, float], bool]) -> dict[float, float]:
    """Per time (to the millisecond), the sum of a per-pod answer's values over the pods `pattern` (a PodSplit
    regex) names; a pod's first values (`<pod>/first`) only where `counts_first(pod, time)` says they count."""
    sums: dict[float, float] = {}
    for pod in sorted(per_pod):
        name, before_first_scrape = pod.removesuffix(FIRST), pod.endswith(FIRST)
        if re.fullmatch(pattern, name):
            for t, v in per_pod[pod].items():
                if not before_first_scrape or counts_first(name, t):
                    sums[round(t, 3)] = sums.get(round(t, 3), 0.0) + v
    return sums


# The pods whose first values are asked: canary pods (<target>-canary-<hash>-<suffix>) only. A new canary
# pod's first second is what a collapse's detection waits for (bench/floor); asking it of every pod of every
# namespace doubled the shared query's samples and its analysis step's time at N = 335 (issue 11).
_CANARY_POD = f'pod=~".+-canary-{_POD_SUFFIX}"'


def _with_first(body: str, series: str, by: str) -> str:
    """The per-pod increase, `or` each new canary series' first value under `<pod>/first` (PodSplit)."""
    canary = series[:-1].rstrip().rstrip(",") + "," + _CANARY_POD + "}"   # a selector may end in a comma
    first = (f"min_over_time({canary}[{{{{interval}}}}]) unless "
             f"last_over_time({canary}[{{{{lookback}}}}] offset {{{{interval}}}})")
    return (f"sum by ({by}) ({body}) or label_replace(sum by ({by}) ({first}), "
            f'"pod", "$1{FIRST}", "pod", "(.+)")')


def pod_split(template: str, *, namespace: str, target: str, interval: str, le: str | None = None,
              look_back: str | None = None) -> PodSplit | None:
    """The per-pod form of a built-in template, or None for any other (it is then asked for canary and stable
    apart, as written). `look_back`: another `{{lookback}}` than the interval's own (metrics/under_way)."""
    m = _SUMMED_INCREASE.match(template)
    if m is None:
        return None
    by_pod = _with_first(m["body"], m["series"], "pod")
    name = regex_literal(target)
    shared = render(_with_first(m["body"], m["series"], "namespace, pod"),
                    selector=f'namespace=~"{SHARED_NAMESPACES}"', interval=interval, namespace="", target="", le=le)
    return PodSplit(query=render(by_pod, selector=selectors(namespace, target).service, interval=interval,
                                 namespace=namespace, target=target, le=le, look_back=look_back),
                    canary=f"{name}-canary-{_POD_SUFFIX}", stable=f"{name}-{_POD_SUFFIX}", shared=shared)


@dataclass(frozen=True, kw_only=True)
class ServiceSplit:
    """The pre-rollout window's counts of a built-in template, for every rollout at once: the increase per
    namespace and pod over the window (`shared`), which the operator sums over the service's pods (`pods`,
    a Python regex fully matched, the same as the PromQL selector's)."""

    shared: str
    pods: str


def service_split(template: str, *, target: str, window: str, le: str | None = None) -> ServiceSplit | None:
    """The shared form of a built-in template over the pre-rollout window, or None for any other."""
    m = _SUMMED_INCREASE.match(template)
    if m is None:
        return None
    by_pod = "sum by (namespace, pod) (increase(" + m["series"] + "[{{interval}}]))"
    return ServiceSplit(shared=render(by_pod, selector=f'namespace=~"{SHARED_NAMESPACES}"', interval=window,
                                      namespace="", target="", le=le),
                        pods=f"{regex_literal(target)}-(canary-)?{_POD_SUFFIX}")


def buckets_query(histogram: str, *, namespace: str, target: str) -> str:
    """The bucket bounds (le) the service's pods export for a histogram, one series per bound."""
    return f"group by (le) ({histogram}_bucket{{{selectors(namespace, target).service}}})"


def alerts_query(alerts: AlertSelector | None) -> str:
    """The firing alerts that carry every label the selector names (None: every firing alert)."""
    if alerts is None:
        return 'ALERTS{alertstate="firing"}'
    matchers = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(alerts.match_labels.items()))
    return f'ALERTS{{alertstate="firing",{matchers}}}'
