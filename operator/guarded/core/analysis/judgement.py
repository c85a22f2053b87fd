"""One analysis step as the engine sees it: when it is due, what the shell fetched, each metric's
judgement, the step's verdict and the record a status keeps of it. Pure; the queries run in the
shell (guarded.metrics)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime

from guarded.api.analysis import Analysis, AnalysisRecord, EvidenceRecord, JudgementRecord, Verdict
from guarded.api.common import parse_duration
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.api.stages import Stage
from guarded.core.analysis.power import power
from guarded.core.analysis.selection import effective_metrics, judge_config
from guarded.core.analysis.statistics import MetricData, judge
from guarded.core.clock import parse, seconds_between, stamp

ANALYSIS_STAGES = frozenset({Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE})
RECENT_LIMIT = 8


@dataclass(frozen=True, kw_only=True)
class AnalysisObservation:
    """What the shell fetched for one analysis step."""

    metrics: dict[str, MetricData]
    alerts: tuple[str, ...] = ()
    alerts_error: str | None = None


# Intervals end on a grid common to every rollout (multiples of the interval since the epoch, for an
# interval of whole seconds: metrics/gather._steps, metrics/shared), and an interval's counts are read once
# its last scrape is in Prometheus, SCRAPE_LAG_SECONDS after it ended. A judgement is due as soon as a new
# interval can be read, and not before: judging between two would see nothing new.
#
# A sample is stamped with its scrape's start and is queryable once that scrape ends, so the lag to wait is
# the scrape's duration, not its period: 0.2 s covers the usual scrape of a few milliseconds (the test bed's
# simulator at the demo's scale: at most 25 ms over 5 minutes; 0.5 s before, which made a collapsed canary's
# rollback 0.3 s later for nothing, bench/floor). A slower scrape stamped before an interval's end lands
# after the interval was first read; the newest intervals are read again at each step (metrics/gather.py),
# so its count is completed then. Reading part of an interval first costs the guarantee nothing: the
# PreRollout judge's log likelihood ratio is a sum over requests and events, the same however the time is
# cut, and the Stable judge's is too while the traffic split holds. Waiting longer would only delay every
# judgement (bench/floor: the 2 s this was before were a sixth of a collapse's time to rollback).
SCRAPE_LAG_SECONDS = 0.2

# A close look: once a judge's evidence is within reach of its Fail threshold, the rollout is judged every
# CLOSE_LOOK_SECONDS on the interval still under way as well (metrics/under_way reads it for this rollout
# alone, cut at one moment whose scrapes are in), so a crossing is seen a scrape after it happens, not when
# the grid's interval ends (bench/floor: a collapsed canary's crossing scrape waited 0.5-1.5 s for that, at a
# 2 s interval and 1 s scrapes). "Within reach": at the evidence's pace since the analysis began, CLOSE_REACH
# intervals more would cross. A healthy canary's log likelihood ratio drifts below zero (the ratio is a
# martingale of mean 1), so looks close are the exception a degrading canary makes, and their cost is its
# own. More looks at the statistic keep its bound on a false Fail, which holds at any time it is read; the
# Stable judge's is exact so only while the traffic split holds within an interval (bench/looks measures it).
CLOSE_LOOK_SECONDS = 0.25
CLOSE_REACH = 2.0


def on_grid(interval: float) -> bool:
    return interval >= 1 and float(interval).is_integer()


def readable_step(at: datetime, interval: float) -> int:
    """The index of the newest interval on the grid whose counts can be read at `at`."""
    return math.floor((at.timestamp() - SCRAPE_LAG_SECONDS) / interval)


def close_to_fail(status: GuardedRolloutStatus, interval: float) -> bool:
    """Whether the newest judgement of the current wave has a judge within reach of its Fail threshold
    (CLOSE_LOOK_SECONDS): its log likelihood ratio, grown at its pace since the analysis began (over two
    intervals at least), would cross it within CLOSE_REACH intervals. Only on the grid (whole seconds)."""
    state = status.analysis
    newest = state.recent[-1] if state.recent else None
    if not on_grid(interval) or newest is None or newest.wave != status.wave or state.since is None:
        return False
    # The pace over two intervals at least: a wave's first reads, over a second or two, would make a healthy
    # canary's small positive start look fast.
    elapsed = max(seconds_between(state.since, parse(newest.time)), 2 * interval)
    for j in newest.judgements:
        for e in j.evidence:
            if e.log_threshold is not None and e.log_lr > 0 and (
                    e.log_lr * (1 + CLOSE_REACH * interval / elapsed) >= e.log_threshold):
                return True
    return False


def next_judgement_in(last_at: str | None, now: datetime, interval: float, *, close: bool = False) -> float:
    """Seconds until the next judgement is due: when the next interval can be read (on the grid), else an
    interval after the last judgement; looking close (close_to_fail), CLOSE_LOOK_SECONDS after the last."""
    if on_grid(interval):
        due = (readable_step(now, interval) + 1) * interval + SCRAPE_LAG_SECONDS
        if last_at is not None and readable_step(parse(last_at), interval) < readable_step(now, interval):
            return 0.05   # a new interval is readable already (this decision did not judge)
        if close and last_at is not None:
            due = min(due, parse(last_at).timestamp() + CLOSE_LOOK_SECONDS)
        return max(0.05, due - now.timestamp())
    return interval if last_at is None else max(0.05, interval - seconds_between(last_at, now))


def analysis_due(spec: GuardedRolloutSpec, status: GuardedRolloutStatus, now: datetime) -> bool:
    if spec.analysis is None or status.stage not in ANALYSIS_STAGES or status.analysis.since is None:
        return False
    last = status.analysis.last_at
    if last is None:
        return True
    interval = parse_duration(spec.analysis.interval)
    if on_grid(interval):
        return readable_step(now, interval) > readable_step(parse(last), interval) or (
            seconds_between(last, now) >= CLOSE_LOOK_SECONDS * 0.95 and close_to_fail(status, interval))
    return seconds_between(last, now) >= interval * 0.95


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


def evaluate(spec: GuardedRolloutSpec, obs: AnalysisObservation, *, stable_serving: bool) -> list[JudgementRecord]:
    assert spec.analysis is not None
    out = []
    for metric in effective_metrics(spec.analysis):
        data = obs.metrics.get(metric.name, MetricData(error="not queried"))
        cfg = judge_config(metric, spec.analysis)
        judgement = judge(cfg, data, stable_serving=stable_serving)
        powered = power(cfg, data)
        out.append(judgement if powered is None else judgement.model_copy(update={"power": powered}))
    return out


def overall(judgements: list[JudgementRecord], alerts: tuple[str, ...], alerts_error: str | None) -> Verdict:
    if alerts or any(j.verdict is Verdict.FAIL for j in judgements):
        return Verdict.FAIL
    if alerts_error or any(j.verdict is Verdict.INCONCLUSIVE for j in judgements) or not judgements:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def record(judgements: list[JudgementRecord], *, verdict: Verdict, now: datetime, wave: int | None,
           alerts: tuple[str, ...], intervals: int) -> AnalysisRecord:
    return AnalysisRecord(time=stamp(now), wave=wave, verdict=verdict, intervals=intervals, alerts=list(alerts),
                          judgements=judgements)


def kept_records(recent: list[AnalysisRecord], newest: AnalysisRecord) -> list[AnalysisRecord]:
    """status.analysis.recent after `newest`: the last RECENT_LIMIT records, of which only the newest of each
    wave keeps all the numbers behind its verdicts; an older one of the same wave is `summarized`.

    A judge's counts and statistic are cumulative over its wave, so a newer record of the same wave holds all
    that an older one knew and more. The record that decided a wave (its last: the Pass that promoted it, the
    Fail that rolled it back) keeps everything. At N = 1,000 rollouts the 8 full records were two thirds of a
    rollout's JSON, sent with every status patch and held in the operator's watch cache (issue 11)."""
    kept = [*recent, newest][-RECENT_LIMIT:]
    return [summarized(r) if r.wave == later.wave else r for r, later in itertools.pairwise(kept)] + [newest]


SUMMARY_FIELDS = frozenset({"judge", "verdict", "canary_ratio", "reference_ratio", "log_lr"})


def summarized(rec: AnalysisRecord) -> AnalysisRecord:
    """The record as a trajectory: each judge's verdict, both ratios and its log likelihood ratio, without the
    counts, thresholds, reasons and power behind them (the judgement's verdict and reason stay). A record
    already summarized is returned as it is, without building it again: all but the newest two are."""
    if all(j.power is None and all(_only_trajectory(e) for e in j.evidence) for j in rec.judgements):
        return rec
    judgements = [j.model_copy(update={"power": None, "evidence": [
        EvidenceRecord(**{k: v for k, v in e if k in SUMMARY_FIELDS}) for e in j.evidence]})
        for j in rec.judgements]
    return rec.model_copy(update={"judgements": judgements})


def _only_trajectory(e: EvidenceRecord) -> bool:
    """Whether a judge's evidence holds nothing beyond SUMMARY_FIELDS (every other field at its default)."""
    return all(getattr(e, name) == f.default for name, f in EvidenceRecord.model_fields.items()
               if name not in SUMMARY_FIELDS)


def summary(judgements: list[JudgementRecord], alerts: tuple[str, ...]) -> str:
    parts = [f"alert firing: {', '.join(alerts)}"] if alerts else []
    for j in judgements:
        if j.verdict is Verdict.FAIL:
            parts.append(f"{j.metric}: {j.reason}")
    return "; ".join(parts) or "; ".join(f"{j.metric}: {j.verdict}" for j in judgements)
