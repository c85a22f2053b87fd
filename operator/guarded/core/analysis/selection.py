"""Which metrics a spec asks for: its own, plus the guards its counter shortcuts add; and how each is judged."""

from __future__ import annotations

from dataclasses import replace

from guarded.api.analysis import Analysis, Direction, Metric
from guarded.api.policy import BUILTIN_METRICS
from guarded.core.analysis.statistics import JudgeConfig

# How each guard a shortcut adds is judged, by the name a policy demands it by (api.policy.BUILTIN_METRICS).
_SHORTCUT_DIRECTIONS = {"orders": Direction.HIGHER_IS_BETTER, "errors": Direction.LOWER_IS_BETTER}


def _increase(counter: str, matchers: str = "") -> str:
    """A template: the counter's increase over the interval, summed over the selected pods."""
    return "sum(increase(" + counter + "{{{selector}}" + matchers + "}[{{interval}}]))"


def _shortcut_guards(analysis: Analysis) -> list[Metric]:
    """The order-rate guard (with spec.analysis.orders) and the error-rate guard, per request."""
    if not analysis.requests:
        return []
    events = {"orders": analysis.orders and _increase(analysis.orders),
              "errors": _increase(analysis.requests, "," + analysis.error_matcher)}
    return [Metric(name=name, direction=_SHORTCUT_DIRECTIONS[alias], requests=_increase(analysis.requests),
                   events=events[alias])
            for alias, name in BUILTIN_METRICS.items() if events[alias]]


def effective_metrics(analysis: Analysis) -> list[Metric]:
    """The metrics to judge: explicit ones, plus the order-rate and error-rate guards of the shortcuts
    (a metric of the same name takes the guard's place)."""
    named = {m.name for m in analysis.metrics}
    return [*analysis.metrics, *(m for m in _shortcut_guards(analysis) if m.name not in named)]


def _config(metric: Metric) -> JudgeConfig:
    return JudgeConfig(
        name=metric.name, direction=metric.direction, stable_tolerance=metric.stable_tolerance,
        pre_rollout_tolerance=metric.pre_rollout_tolerance, min_ratio=metric.min_ratio, max_ratio=metric.max_ratio,
        min_requests=float(metric.min_requests),
    )


def judges_of(metric: Metric) -> int:
    return _config(metric).judges


def judge_config(metric: Metric, analysis: Analysis) -> JudgeConfig:
    """The wave's false-rollback budget is split evenly over every (metric, judge) test (Bonferroni),
    so `falseRollbackRate` bounds the chance that a healthy wave is rolled back by any of them."""
    tests = max(1, sum(judges_of(m) for m in effective_metrics(analysis)))
    return replace(_config(metric), alpha=analysis.false_rollback_rate / tests)
