"""Analysis as the engine sees it: which metrics a spec asks for, their queries, when they are due,
and the verdict of one analysis step. Pure; the queries run in the shell (guarded.metrics)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from guarded.api.analysis import Analysis, Metric
from guarded.api.common import parse_duration
from guarded.api.rollout import (
    AnalysisRecord,
    EvidenceRecord,
    GuardedRolloutSpec,
    GuardedRolloutStatus,
    JudgementRecord,
    Stage,
)
from guarded.core.clock import seconds_between, stamp
from guarded.core.judges import Direction, JudgeConfig, Judgement, MetricData, Verdict, judge

ANALYSIS_STAGES = frozenset({Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE})
RECENT_LIMIT = 8

# Pod names of a Deployment's pods: <deployment>-<replicaset hash>-<pod suffix>.
_POD_SUFFIX = "[a-z0-9]{1,10}-[a-z0-9]{5}"


@dataclass(frozen=True)
class Selectors:
    canary: str
    stable: str
    service: str


@dataclass(frozen=True, kw_only=True)
class AnalysisObservation:
    """What the shell fetched for one analysis step."""

    metrics: dict[str, MetricData]
    alerts: tuple[str, ...] = ()
    alerts_error: str | None = None


def escape_label_value(value: str) -> str:
    """A PromQL string literal's content: backslashes and quotes escaped, no newlines."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_regex(value: str) -> str:
    return escape_label_value(re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", value))


def selectors(namespace: str, target: str) -> Selectors:
    ns = f'namespace="{escape_label_value(namespace)}"'
    name = escape_regex(target)
    return Selectors(
        canary=f'{ns},pod=~"{name}-canary-{_POD_SUFFIX}"',
        stable=f'{ns},pod=~"{name}-{_POD_SUFFIX}"',
        service=f'{ns},pod=~"{name}-(canary-)?{_POD_SUFFIX}"',
    )


def render(template: str, *, selector: str, interval: str, namespace: str, target: str) -> str:
    values = {"selector": selector, "interval": interval, "namespace": escape_label_value(namespace),
              "target": escape_label_value(target)}
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template)


def effective_metrics(analysis: Analysis) -> list[Metric]:
    """The metrics to judge: explicit ones, plus the order-rate and error-rate guards of the shortcuts."""
    metrics = list(analysis.metrics)
    names = {m.name for m in metrics}
    if analysis.requests:
        def increase(counter: str, extra: str = "") -> str:
            return "sum(increase(" + counter + "{{{selector}}" + extra + "}[{{interval}}]))"
        requests = increase(analysis.requests)
        if analysis.orders and "order-rate" not in names:
            metrics.append(Metric(name="order-rate", direction="HigherIsBetter", requests=requests,
                                  events=increase(analysis.orders)))
        if "error-rate" not in names:
            metrics.append(Metric(name="error-rate", direction="LowerIsBetter", requests=requests,
                                  events=increase(analysis.requests, "," + analysis.error_matcher)))
    return metrics


def judges_of(metric: Metric) -> int:
    bound = metric.min_ratio if metric.direction == "HigherIsBetter" else metric.max_ratio
    return sum(x is not None for x in (metric.stable_tolerance, metric.pre_rollout_tolerance, bound))


def judge_config(metric: Metric, analysis: Analysis) -> JudgeConfig:
    """The wave's false-rollback budget is split evenly over every (metric, judge) test (Bonferroni),
    so `falseRollbackRate` bounds the chance that a healthy wave is rolled back by any of them."""
    tests = max(1, sum(judges_of(m) for m in effective_metrics(analysis)))
    return JudgeConfig(
        name=metric.name, direction=Direction(metric.direction), stable_tolerance=metric.stable_tolerance,
        pre_rollout_tolerance=metric.pre_rollout_tolerance, min_ratio=metric.min_ratio, max_ratio=metric.max_ratio,
        alpha=analysis.false_rollback_rate / tests, min_requests=float(metric.min_requests),
    )


def analysis_due(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, now: datetime) -> bool:
    if spec.analysis is None or status.stage not in ANALYSIS_STAGES or status.analysis.since is None:
        return False
    last = status.analysis.last_at
    return last is None or seconds_between(last, now) >= parse_duration(spec.analysis.interval) * 0.95


def fresh(analysis: Analysis, obs: AnalysisObservation) -> bool:
    """The observation looks at now: no query failed and every metric's newest interval has canary data.

    Only time between fresh judgements counts as bake, and a wave advances only on a fresh Pass, so a
    Pass computed from intervals before a gap (Prometheus down, scrapes missing) never moves a wave."""
    if obs.alerts_error is not None:
        return False
    for metric in effective_metrics(analysis):
        data = obs.metrics.get(metric.name)
        if data is None or data.error is not None or not data.canary or data.canary[-1] is None:
            return False
    return True


def evaluate(spec: GuardedRolloutSpec, obs: AnalysisObservation, *, stable_serving: bool) -> list[Judgement]:
    assert spec.analysis is not None
    out = []
    for metric in effective_metrics(spec.analysis):
        data = obs.metrics.get(metric.name, MetricData(error="not queried"))
        out.append(judge(judge_config(metric, spec.analysis), data, stable_serving=stable_serving))
    return out


def overall(judgements: list[Judgement], alerts: tuple[str, ...], alerts_error: str | None) -> Verdict:
    if alerts or any(j.verdict is Verdict.FAIL for j in judgements):
        return Verdict.FAIL
    if alerts_error or any(j.verdict is Verdict.INCONCLUSIVE for j in judgements) or not judgements:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def record(judgements: list[Judgement], *, verdict: Verdict, now: datetime, wave: int | None,
           alerts: tuple[str, ...], intervals: int) -> AnalysisRecord:
    return AnalysisRecord(
        time=stamp(now), wave=wave, verdict=str(verdict), intervals=intervals, alerts=list(alerts),
        judgements=[JudgementRecord(
            metric=j.metric, verdict=str(j.verdict), reason=j.reason,
            evidence=[EvidenceRecord(
                judge=e.judge, verdict=str(e.verdict), canary_events=e.canary_events,
                canary_requests=e.canary_requests, reference_events=e.reference_events,
                reference_requests=e.reference_requests,
                canary_ratio=None if e.canary_ratio is None else round(e.canary_ratio, 6),
                reference_ratio=None if e.reference_ratio is None else round(e.reference_ratio, 6),
                threshold_rho=e.threshold_rho, log_lr=e.log_lr, log_threshold=e.log_threshold, reason=e.reason,
            ) for e in j.evidence],
        ) for j in judgements],
    )


def summary(judgements: list[Judgement], alerts: tuple[str, ...]) -> str:
    parts = [f"alert firing: {', '.join(alerts)}"] if alerts else []
    for j in judgements:
        if j.verdict is Verdict.FAIL:
            parts.append(f"{j.metric}: {j.reason}")
    return "; ".join(parts) or "; ".join(f"{j.metric}: {j.verdict}" for j in judgements)
