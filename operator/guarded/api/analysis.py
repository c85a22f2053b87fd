"""spec.analysis: which counters judge a wave, against which baselines, and what no data means."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from guarded.api.common import ApiModel, bounded_duration

Interval = bounded_duration("spec.analysis.interval", "1s", "1h", "How often a wave is judged.")
PreRolloutWindow = bounded_duration(
    "spec.analysis.preRolloutWindow", "10s", "168h",
    "Service window before the rollout started (a Prometheus range: at least a few scrapes).")


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


class Metric(ApiModel):
    """A ratio of two counters' increases (events per request), judged canary against baselines.

    Templates are PromQL returning one number: the counter increase over `{{interval}}` for the pods
    `{{selector}}` selects (label matchers, already escaped: `namespace="…",pod=~"…"`). Also available:
    `{{namespace}}`, `{{target}}`.
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
    metrics: list[Metric] = Field(default_factory=list, max_length=20)
    alerts: AlertSelector | None = None

    @model_validator(mode="after")
    def _something_to_judge(self) -> Analysis:
        if self.orders and not self.requests:
            raise ValueError("spec.analysis.orders needs spec.analysis.requests (orders are judged per request)")
        names = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError("spec.analysis.metrics: names must be unique")
        return self


# What status.analysis.recent keeps of each analysis step. The judges return these records themselves.
# (Comments, not docstrings: a docstring would become the CRD's description.)

# One judge's sequential test of a metric's canary ratio against a reference (docs/analysis.md).
class EvidenceRecord(ApiModel):
    judge: str                           # Stable | PreRollout | Bound
    verdict: RecordedVerdict
    canary_events: float = 0
    canary_requests: float = 0
    reference_events: float = 0
    reference_requests: float = 0
    canary_ratio: float | None = None
    reference_ratio: float | None = None
    threshold_rho: float | None = None   # the tolerated ratio rho0 of canary to reference
    log_lr: float = 0                    # the mixture log likelihood ratio gathered so far
    log_threshold: float = 0             # log(1/alpha): Fail at or above it
    reason: str = ""
    no_data: NoData = False


# One metric's judgement: Fail if any judge fails, Pass if all pass, else Inconclusive.
class JudgementRecord(ApiModel):
    metric: str
    verdict: RecordedVerdict
    reason: str = ""
    evidence: list[EvidenceRecord] = Field(default_factory=list)
    no_data: NoData = False


# One analysis step: the verdict over every metric and the firing alerts.
class AnalysisRecord(ApiModel):
    time: str
    wave: int | None = None
    verdict: RecordedVerdict
    intervals: int = 0
    alerts: list[str] = Field(default_factory=list)
    judgements: list[JudgementRecord] = Field(default_factory=list)
