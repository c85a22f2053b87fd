"""Which metrics a spec asks for: its own, plus the guards its counter shortcuts add; and how each is judged."""

from __future__ import annotations

from dataclasses import replace

from guarded.api.analysis import SHORTCUT_DIRECTIONS, Analysis, Detect, Direction, Metric
from guarded.api.common import parse_duration
from guarded.api.policy import BUILTIN_METRICS
from guarded.core.analysis.statistics import JudgeConfig

LATENCY_GUARD = BUILTIN_METRICS["latency"]
# The bucket bound the latency guard's queries compare with; the shell fills in the `le` it found
# among the histogram's series (metrics/gather.py), since the text of a bound varies by exporter.
LE = "{{le}}"


def _increase(counter: str, matchers: str = "") -> str:
    """A template: the counter's exact increase over the interval, summed over the selected pods.

    Per series, the last sample at the interval's end minus the last one at or before its start (skipping
    a failed scrape's stale marker: `last_over_time` over `{{lookback}}`), so that consecutive intervals
    tile the samples: every increment counted once, none extrapolated. PromQL's `increase(x[interval])`
    would not do: it reads only the samples inside each window, so the increment between the last sample
    of one window and the first of the next is lost, and it scales the rest up to the window's length. At a
    2 s interval and 1 s scrapes that is half of the counts lost and the other half doubled: counts twice
    as variable as Poisson's, which the judges' false-rollback bound assumes (docs/analysis.md).

    Never more than happened: a series with no sample within `{{lookback}}` before the interval (a new pod,
    or one Prometheus lost sight of) counts from its first sample in the interval (`min_over_time`: a
    counter's first value there), so a new canary pod's traffic is judged from its first interval, not its
    second (bench/floor: a second of a collapsed canary's orders). What a new pod served before its first
    scrape (its counters' first values) is added apart, by the per-pod queries (metrics/queries.PodSplit), only
    for a pod known to be new (metrics/gather._Reader.from_zero). A counter reset
    counts nothing for its interval (clamped at zero). The pre-rollout window, minutes long, is asked with
    increase() (metrics/queries.py), whose extrapolation is negligible there and which counts the pods it saw
    start."""
    series = counter + "{{{selector}}" + matchers + "}"
    return (f"sum(clamp_min({series} - (last_over_time({series}[{{{{lookback}}}}] offset {{{{interval}}}}) or "
            f"min_over_time({series}[{{{{interval}}}}])), 0))")


def _latency_guard(analysis: Analysis) -> Metric | None:
    """Slow requests per request: the histogram's count minus its threshold bucket, over its count. The
    requests query answers only where the threshold bucket exists (`and`), so pods without that bucket
    give no data (never zero slow requests). `le=~`: every spelling of the bound ("0.25", "0.250") that
    the pods export (metrics/gather.latency_bucket)."""
    if analysis.latency is None:
        return None
    h = analysis.latency.histogram
    count, bucket = _increase(h + "_count"), _increase(h + "_bucket", ',le=~"' + LE + '"')
    return Metric(name=LATENCY_GUARD, direction=Direction.LOWER_IS_BETTER, events=f"{count} - {bucket}",
                  requests=f"{count} and {bucket}")


def _shortcut_guards(analysis: Analysis) -> list[Metric]:
    """The order-rate guard (with spec.analysis.orders), the error-rate guard, per request, and the latency guard."""
    out = []
    if analysis.requests:
        events = {"orders": analysis.orders and _increase(analysis.orders),
                  "errors": _increase(analysis.requests, "," + analysis.error_matcher)}
        out = [Metric(name=BUILTIN_METRICS[alias], direction=SHORTCUT_DIRECTIONS[alias],
                      requests=_increase(analysis.requests), events=events[alias])
               for alias in ("orders", "errors") if events[alias]]
    latency = _latency_guard(analysis)
    return [*out, latency] if latency is not None else out


def effective_metrics(analysis: Analysis) -> list[Metric]:
    """The metrics to judge: explicit ones, plus the order-rate, error-rate and latency guards of the
    shortcuts (a metric of the same name takes the guard's place)."""
    named = {m.name for m in analysis.metrics}
    return [*analysis.metrics, *(m for m in _shortcut_guards(analysis) if m.name not in named)]


def is_latency_guard(metric: Metric, analysis: Analysis) -> bool:
    return analysis.latency is not None and metric.name == LATENCY_GUARD \
        and all(m.name != LATENCY_GUARD for m in analysis.metrics)


def detection_of(metric: Metric, analysis: Analysis) -> Detect | None:
    """The strictest degradation spec.analysis.detect requires of this metric (by its name or its alias)."""
    names = {metric.name, *(alias for alias, name in BUILTIN_METRICS.items() if name == metric.name)}
    found = [d for d in analysis.detect if d.metric in names]
    if not found:
        return None
    return Detect(metric=metric.name, degradation=min(d.degradation for d in found),
                  power=max(d.power for d in found))


def _config(metric: Metric, detect: Detect | None = None) -> JudgeConfig:
    stable_tolerance = metric.stable_tolerance
    if detect is not None and stable_tolerance is not None:
        # A drop of `degradation` can be told apart only from a tolerance below it: the Stable judge
        # tolerates at most half the degradation that must be detectable.
        stable_tolerance = min(stable_tolerance, detect.degradation / 2)
    return JudgeConfig(
        name=metric.name, direction=metric.direction, stable_tolerance=stable_tolerance,
        pre_rollout_tolerance=metric.pre_rollout_tolerance, min_ratio=metric.min_ratio, max_ratio=metric.max_ratio,
        min_requests=float(metric.min_requests),
        detect_degradation=None if detect is None else detect.degradation,
        detect_power=None if detect is None else detect.power,
    )


def judges_of(metric: Metric) -> int:
    return _config(metric).judges


def judge_config(metric: Metric, analysis: Analysis) -> JudgeConfig:
    """The wave's false-rollback budget is split evenly over every (metric, judge) test (Bonferroni),
    so `falseRollbackRate` bounds the chance that a healthy wave is rolled back by any of them."""
    tests = max(1, sum(judges_of(m) for m in effective_metrics(analysis)))
    return replace(_config(metric, detection_of(metric, analysis)), alpha=analysis.false_rollback_rate / tests,
                   interval_seconds=parse_duration(analysis.interval))
