"""Analysis: is a wave's canary degraded? One package, read in three parts:

* `statistics`: the judges, pure arithmetic on counter increases (Counts, MetricData), each a sequential
  likelihood-ratio test that returns the records a status keeps (api.analysis.EvidenceRecord,
  JudgementRecord);
* `selection`: which metrics a spec asks for (its own and the guards of its counter shortcuts) and how
  each is judged (JudgeConfig, the false-rollback budget split over every test);
* `power`: whether the evidence so far could have detected the degradation spec.analysis.detect names;
* `judgement`: one analysis step: when it is due, what the shell fetched (AnalysisObservation), the
  step's verdict and its record (api.analysis.AnalysisRecord).

The queries themselves are PromQL, rendered and run by the metric provider (guarded.metrics).
"""

from guarded.api.analysis import Direction, Verdict
from guarded.core.analysis.judgement import (
    ANALYSIS_STAGES,
    CLOSE_LOOK_SECONDS,
    RECENT_LIMIT,
    SCRAPE_LAG_SECONDS,
    AnalysisObservation,
    analysis_due,
    close_to_fail,
    evaluate,
    fresh,
    kept_records,
    next_judgement_in,
    on_grid,
    overall,
    record,
    summary,
)
from guarded.core.analysis.power import power
from guarded.core.analysis.selection import (
    LATENCY_GUARD,
    LE,
    detection_of,
    effective_metrics,
    is_latency_guard,
    judge_config,
    judges_of,
)
from guarded.core.analysis.statistics import Counts, JudgeConfig, MetricData, judge

__all__ = [
    "ANALYSIS_STAGES",
    "CLOSE_LOOK_SECONDS",
    "LATENCY_GUARD",
    "LE",
    "RECENT_LIMIT",
    "SCRAPE_LAG_SECONDS",
    "AnalysisObservation",
    "Counts",
    "Direction",
    "JudgeConfig",
    "MetricData",
    "Verdict",
    "analysis_due",
    "close_to_fail",
    "detection_of",
    "effective_metrics",
    "evaluate",
    "fresh",
    "is_latency_guard",
    "judge",
    "judge_config",
    "judges_of",
    "kept_records",
    "next_judgement_in",
    "on_grid",
    "overall",
    "power",
    "record",
    "summary",
]
