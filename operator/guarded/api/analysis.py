"""spec.analysis: which counters judge a wave, against which baselines, and what no data means."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from guarded.api.common import ApiModel, bounded_duration
from guarded.api.policy import BUILTIN_METRICS

Interval = bounded_duration("spec.analysis.interval", "1s", "1h", "How often a wave is judged.")
PreRolloutWindow = bounded_duration(
    "spec.analysis.preRolloutWindow", "10s", "168h",
    "Service window before the rollout started (a Prometheus range: at least a few scrapes).")
LatencyThreshold = bounded_duration(
    "spec.analysis.latency.threshold", "1ms", "1h",
    "A request slower than this is slow; it must equal an upper bound (le) of one of the histogram's buckets.")


class Direction(StrEnum):
    """Which way a metric's ratio is better."""

    HIGHER_IS_BETTER = "HigherIsBetter"   # orders per request
    LOWER_IS_BETTER = "LowerIsBetter"     # errors per request


class Verdict(StrEnum):
    """What a judge, a metric's judgement or an analysis step concluded."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


# A verdict as a status records it: the enum in memory, a string in the CRD (only the operator writes a status).
RecordedVerdict = Annotated[Verdict, WithJsonSchema({"type": "string"})]
# Inconclusive for want of data (no answer, no canary traffic, no baseline), not for want of evidence yet:
# only such judgements count towards maxInconclusive. Known in memory only, never written to a status.
NoData = Annotated[bool, SkipJsonSchema(), Field(exclude=True)]


# How each guard a shortcut adds is judged, by the name a policy demands it by (api.policy.BUILTIN_METRICS).
SHORTCUT_DIRECTIONS = {"orders": Direction.HIGHER_IS_BETTER, "errors": Direction.LOWER_IS_BETTER,
                       "latency": Direction.LOWER_IS_BETTER}


class Metric(ApiModel):
    """A ratio of two counters' increases (events per request), judged canary against baselines.

    Templates are PromQL returning one number: the counter's exact increase over `{{interval}}` for the pods
    `{{selector}}` selects (label matchers, already escaped: `namespace="…",pod=~"…"`), best written
    `sum(clamp_min(x{{{selector}}} - (last_over_time(x{{{selector}}}[{{lookback}}] offset {{interval}}) or
    min_over_time(x{{{selector}}}[{{interval}}])), 0))` (increase() drops and extrapolates samples:
    docs/analysis.md). Also available: `{{namespace}}`, `{{target}}`.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "self.direction != 'HigherIsBetter' || ((!has(self.stableTolerance) || self.stableTolerance < 1.0)"
                " && (!has(self.preRolloutTolerance) || self.preRolloutTolerance < 1.0))",
        "message": "stableTolerance and preRolloutTolerance must be below 1 for HigherIsBetter metrics",
    }]})

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    direction: Direction = Field(description="HigherIsBetter for orders, LowerIsBetter for errors.")
    events: str = Field(min_length=1, max_length=4096, description="Events counter increase (numerator).")
    requests: str = Field(min_length=1, max_length=4096, description="Requests counter increase (denominator).")
    stable_tolerance: float | None = Field(
        default=0.2, gt=0, le=10,
        description="Allowed relative degradation against the stable pods (0.2: orders may be 20% lower, "
        "errors 20% higher). Above 0, at most 10 (below 1 for HigherIsBetter); null, not 0, disables this judge.")
    pre_rollout_tolerance: float | None = Field(
        default=0.5, gt=0, le=10,
        description="Allowed relative degradation against the whole service before the rollout. Above 0, at most 10 "
        "(below 1 for HigherIsBetter); null, not 0, disables.")
    min_ratio: float | None = Field(default=None, gt=0, le=1,
                                    description="Absolute floor (HigherIsBetter), above 0 and at most 1.")
    max_ratio: float | None = Field(default=None, gt=0, le=1,
                                    description="Absolute ceiling (LowerIsBetter), above 0 and at most 1.")
    min_requests: int = Field(default=100, ge=1, le=1_000_000_000,
                              description="Canary requests needed before a Pass, from 1 to 10^9.")

    @model_validator(mode="after")
    def _tolerance_fits_direction(self) -> Metric:
        if self.direction is not Direction.HIGHER_IS_BETTER:
            return self
        if self.stable_tolerance is not None and self.stable_tolerance >= 1:
            raise ValueError("stableTolerance must be below 1 for HigherIsBetter metrics")
        if self.pre_rollout_tolerance is not None and self.pre_rollout_tolerance >= 1:
            raise ValueError("preRolloutTolerance must be below 1 for HigherIsBetter metrics")
        return self


class AlertSelector(ApiModel):
    match_labels: dict[str, str] = Field(min_length=1, description="Labels a firing alert must carry.")

    @model_validator(mode="after")
    def _label_names(self) -> AlertSelector:
        for key in self.match_labels:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", key):
                raise ValueError(f"spec.analysis.alerts.matchLabels: {key!r} is not a Prometheus label name")
        return self


class Latency(ApiModel):
    """The latency guard: the share of requests slower than `threshold`, judged like the error rate
    (LowerIsBetter): (requests - the threshold bucket's count) / requests, from a Prometheus histogram."""

    histogram: str = Field(max_length=253, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                           description="The histogram's name, without _bucket or _count "
                           "(e.g. http_request_duration_seconds).")
    threshold: LatencyThreshold = "500ms"
    unit: Literal["seconds", "milliseconds"] = Field(
        default="seconds", description="The unit of the histogram's bucket bounds (le): seconds by Prometheus "
        "convention.")


class Detect(ApiModel):
    """A degradation the waves before the last must have had the power to detect before 100%."""

    metric: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                        description="orders, errors, latency (the shortcuts' guards) or a metric's name.")
    degradation: float = Field(
        gt=0, le=10, description="The smallest degradation that must be detectable, relative like a tolerance: "
        "0.2 is orders 20% lower, 1.0 is errors twice as high. Below 1 for HigherIsBetter metrics.")
    power: float = Field(default=0.95, gt=0.5, le=0.999,
                         description="The chance (1 - beta) that a canary that bad is rolled back before the "
                         "last wave.")


class Analysis(ApiModel):
    interval: Interval = "5s"
    false_rollback_rate: float = Field(
        default=0.01, gt=0, lt=0.5,
        description="Bound on the chance that a healthy wave is rolled back, however long it runs.")
    max_inconclusive: int = Field(default=60, ge=1, le=10000,
                                  description="Consecutive Inconclusive judgements before onInconclusive applies.")
    on_inconclusive: Literal["Rollback", "Hold"] = "Rollback"
    pre_rollout_window: PreRolloutWindow = "10m"
    requests: str | None = Field(default=None, max_length=253, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                                 description="Shortcut: the requests counter (e.g. http_requests_total).")
    orders: str | None = Field(default=None, max_length=253, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                               description="Shortcut: the orders counter; adds an order-rate guard.")
    error_matcher: str = Field(default='code=~"5.."', max_length=253,
                               description="Shortcut: label matcher that marks a request as an error.")
    latency: Latency | None = Field(default=None, description="Adds the latency guard (slow-request-rate).")
    metrics: list[Metric] = Field(default_factory=list, max_length=20)
    alerts: AlertSelector | None = None
    detect: list[Detect] = Field(
        default_factory=list, max_length=20,
        description="Degradations that must be detectable before the last wave: the wave before it holds "
        "(condition Powered=False) until the evidence has that power.")

    @model_validator(mode="after")
    def _something_to_judge(self) -> Analysis:
        if self.orders and not self.requests:
            raise ValueError("spec.analysis.orders needs spec.analysis.requests (orders are judged per request)")
        names = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError("spec.analysis.metrics: names must be unique")
        for i, d in enumerate(self.detect):
            problem = self._detect_problem(d)
            if problem:
                raise ValueError(f"spec.analysis.detect[{i}]: {problem}")
        return self

    def guard_directions(self) -> dict[str, Direction]:
        """Every guard this analysis judges, by name (a shortcut's guard also by its alias), with its direction."""
        out = {m.name: m.direction for m in self.metrics}
        shortcuts = {"orders": bool(self.requests and self.orders), "errors": bool(self.requests),
                     "latency": self.latency is not None}
        for alias, name in BUILTIN_METRICS.items():
            if shortcuts[alias]:
                direction = out.setdefault(name, SHORTCUT_DIRECTIONS[alias])
                out.setdefault(alias, direction)
        return out

    def _detect_problem(self, d: Detect) -> str | None:
        direction = self.guard_directions().get(d.metric)
        if direction is None:
            return f"metric {d.metric!r} is not judged (set its shortcut or add it to spec.analysis.metrics)"
        if direction is Direction.HIGHER_IS_BETTER and d.degradation >= 1:
            return f"degradation {d.degradation:g} must be below 1 for {d.metric} (HigherIsBetter)"
        # Power is judged by the Stable judge (its tolerance tightened to half the degradation) and the
        # PreRollout judge: with no Stable judge, only a degradation beyond preRolloutTolerance is detectable.
        guard = BUILTIN_METRICS.get(d.metric, d.metric)
        metric = next((m for m in self.metrics if m.name in (d.metric, guard)), None)
        stable, pre = (0.2, 0.5) if metric is None else (metric.stable_tolerance, metric.pre_rollout_tolerance)
        if stable is None and (pre is None or d.degradation <= pre):
            tolerance = "is disabled" if pre is None else f"is {pre:g}"
            return (f"degradation {d.degradation:g} of {d.metric} can never be detected: its stableTolerance is "
                    f"null and its preRolloutTolerance {tolerance} (a judge detects only a degradation beyond "
                    "its tolerance); set stableTolerance or ask for a larger degradation")
        return None


# What status.analysis.recent keeps of each analysis step. The judges return these records themselves.
# (Comments, not docstrings: a docstring would become the CRD's description.)

# One judge's sequential test of a metric's canary ratio against a reference (docs/analysis.md).
class EvidenceRecord(ApiModel):
    judge: str                           # Stable | PreRollout | Bound
    verdict: RecordedVerdict
    # The counts and the threshold are absent from a record a newer one of its wave superseded (its
    # trajectory stays: verdict, ratios, log_lr; core/analysis/judgement.summarized).
    canary_events: float | None = None
    canary_requests: float | None = None
    reference_events: float | None = None
    reference_requests: float | None = None
    canary_ratio: float | None = None
    reference_ratio: float | None = None
    threshold_rho: float | None = None   # the tolerated ratio rho0 of canary to reference
    log_lr: float = 0                    # the mixture log likelihood ratio gathered so far
    log_threshold: float | None = None   # log(1/alpha): Fail at or above it
    reason: str = ""
    no_data: NoData = False


# Whether the evidence so far could have detected a required degradation (spec.analysis.detect):
# the chance that the judges would have failed a canary that bad by now, and what more it needs.
class PowerRecord(ApiModel):
    degradation: float                   # 0.2: orders 20% lower (errors 20% higher)
    probability: float                   # a lower bound on the chance of a Fail by now at that degradation
    required: float                      # 1 - beta
    more_requests: float | None = None   # canary requests still needed at the current split (null: unknown)
    more_seconds: float | None = None    # the same at the canary's current request rate
    reason: str = ""


# One metric's judgement: Fail if any judge fails, Pass if all pass, else Inconclusive.
class JudgementRecord(ApiModel):
    metric: str
    verdict: RecordedVerdict
    reason: str = ""
    evidence: list[EvidenceRecord] = Field(default_factory=list)
    power: PowerRecord | None = None
    no_data: NoData = False


# One analysis step: the verdict over every metric and the firing alerts.
class AnalysisRecord(ApiModel):
    time: str
    wave: int | None = None
    verdict: RecordedVerdict
    intervals: int = 0
    alerts: list[str] = Field(default_factory=list)
    judgements: list[JudgementRecord] = Field(default_factory=list)
