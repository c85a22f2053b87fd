"""Analysis inside a decision: judge what the shell fetched, roll back on Fail or alert, hold on no data.

The shell fetches only when `Decision.observe_analysis_at` (from `next_judgement`) says a judgement
is due; `analyze` records the judgement, accrues observed bake time, and rolls back on a Fail.
"""

from __future__ import annotations

from guarded.api.analysis import Direction, JudgementRecord
from guarded.api.common import parse_duration
from guarded.api.reasons import Reason
from guarded.api.rollout import AnalysisStatus, GuardedRolloutSpec, GuardedRolloutStatus, PreRolloutCounts
from guarded.api.stages import Stage
from guarded.core import analysis
from guarded.core import conditions as cond
from guarded.core.analysis import AnalysisObservation, Verdict
from guarded.core.clock import parse, seconds_between, stamp
from guarded.core.draft import Draft, Inputs, canary_target, current_wave, total, wave_index, wave_label, waves
from guarded.core.moves import rollback


def analyze(inp: Inputs, d: Draft) -> Draft:
    """Judge the wave on what the shell fetched; alerts and failures roll back at once."""
    if not d.stage.in_wave:
        return d
    if inp.obs.webhook_alerts:
        return rollback(inp, d, Reason.ALERT_FIRING, f"wave {wave_label(inp, d.status)}: alert firing "
                        f"(Alertmanager): {', '.join(inp.obs.webhook_alerts)}")
    obs, spec = inp.obs.analysis, inp.spec.analysis
    if spec is None or not d.stage.judged:
        return d
    if obs is None:
        # Not due in this decision: come back when the next judgement is, whatever else waits longer
        # (a bake), so that a bad canary is judged every interval and not only when its bake ends.
        return d.wait(next_judgement(inp, d))
    return judge(inp, d, obs)


def next_judgement(inp: Inputs, d: Draft) -> float:
    """Seconds until the next judgement: the grid's next interval, or sooner when looking close."""
    assert inp.spec.analysis is not None
    interval = parse_duration(inp.spec.analysis.interval)
    return analysis.next_judgement_in(d.status.analysis.last_at, inp.now, interval,
                                      close=analysis.close_to_fail(d.status, interval))


# A wave's first judgements press (`pressing`): the first may come before the canary's first whole interval
# (no evidence yet), the second then reads it. Bounded, so that a wave judged on no data (Prometheus down, no
# canary traffic) does not press for as long as it lasts.
PRESSING_JUDGEMENTS = 2


def pressing(spec: GuardedRolloutSpec, status: GuardedRolloutStatus) -> bool:
    """Whether the rollout's next reconcile should be served before the other waiting ones
    (handlers/workers.py): its stable is being restored (a rollback, a retire), or its canary is judged and
    either has had fewer than PRESSING_JUDGEMENTS judgements in this wave (a bad canary is first seen by its
    first evidence) or its evidence is within reach of a Fail (`close_to_fail`: looked at closely), so its
    next look may roll back."""
    if status.stage.cleaning:
        return True
    if spec.analysis is None or not status.stage.judged:
        return False
    if sum(1 for r in status.analysis.recent if r.wave == status.wave) < PRESSING_JUDGEMENTS:
        return True
    return analysis.close_to_fail(status, parse_duration(spec.analysis.interval))


def judge(inp: Inputs, d: Draft, obs: AnalysisObservation) -> Draft:
    spec = inp.spec.analysis
    assert spec is not None
    state = d.status.analysis
    stable_serving = total(d.status) - canary_target(inp, d.status) > 0
    judgements = analysis.evaluate(inp.spec, obs, stable_serving=stable_serving)
    verdict = analysis.overall(judgements, obs.alerts, obs.alerts_error)
    intervals = max((len(m.canary) for m in obs.metrics.values()), default=0)
    rec = analysis.record(judgements, verdict=verdict, now=inp.now, wave=d.status.wave, alerts=obs.alerts,
                          intervals=intervals)
    # Only a lack of *data* (Prometheus down, failed queries, no traffic, no baseline) counts towards
    # maxInconclusive; evidence that is still accumulating is bounded by the bake's deadline.
    no_data = verdict is Verdict.INCONCLUSIVE and (obs.alerts_error is not None or any(
        j.no_data for j in judgements if j.verdict is Verdict.INCONCLUSIVE))
    inconclusive = state.consecutive_inconclusive + 1 if no_data else 0
    is_fresh = analysis.fresh(spec, obs)
    d = observe_bake(inp, d, state, is_fresh)
    d = d.update(analysis=state.model_copy(update={
        "last_at": stamp(inp.now), "last_verdict": str(verdict), "consecutive_inconclusive": inconclusive,
        "pre_rollout": pre_rollout(state, obs), "recent": analysis.kept_records(state.recent, rec),
        "fresh_since": (state.fresh_since or stamp(inp.now)) if is_fresh else None,
    }))
    label, changed = wave_label(inp, d.status), state.last_verdict != str(verdict)
    if verdict is Verdict.FAIL:
        reason = Reason.ALERT_FIRING if obs.alerts else Reason.ANALYSIS_FAILED
        return rollback(inp, d, reason, f"wave {label}: {analysis.summary(judgements, obs.alerts)}")
    if verdict is Verdict.INCONCLUSIVE:
        if changed:
            why = obs.alerts_error or "; ".join(j.metric + ": " + j.reason for j in judgements)
            d = d.record(inp, Reason.ANALYSIS_INCONCLUSIVE, f"wave {label}: holding: {why}", warning=True)
        if inconclusive >= spec.max_inconclusive and spec.on_inconclusive == "Rollback":
            return rollback(inp, d, Reason.ANALYSIS_INCONCLUSIVE, f"wave {label}: no data for {inconclusive} "
                            f"judgements in a row (spec.analysis.maxInconclusive {spec.max_inconclusive})")
    elif changed:
        d = d.record(inp, Reason.ANALYSIS_PASSED, f"wave {label}: {analysis.summary(judgements, obs.alerts)}")
    return d.wait(next_judgement(inp, d))


def pre_rollout(state: AnalysisStatus, obs: AnalysisObservation) -> list[PreRolloutCounts]:
    """The service's counts before the rollout: read once per metric, then kept in status."""
    pre = list(state.pre_rollout)
    known = {p.metric for p in pre}
    for name, data in sorted(obs.metrics.items()):
        if name not in known and data.pre_rollout is not None and data.error is None:
            pre.append(PreRolloutCounts(metric=name, events=data.pre_rollout.events,
                                        requests=data.pre_rollout.requests))
    return pre


def observe_bake(inp: Inputs, d: Draft, state: AnalysisStatus, is_fresh: bool) -> Draft:
    """Bake time accrues only under observation: from the previous judgement to this one, when both
    had fresh data, and never while paused. The first fresh judgement after a gap accrues nothing."""
    s = d.status
    if s.stage != Stage.BAKE or s.paused or not is_fresh or state.fresh_since is None or not s.bake_started_at:
        return d
    since = max(parse(state.last_at or s.bake_started_at), parse(s.bake_started_at))
    gained = max(0.0, (inp.now - since).total_seconds())
    return d.update(baked_seconds=round(float(s.baked_seconds or 0.0) + gained, 3))


def _shortfall(j: JudgementRecord, direction: Direction | None) -> str:
    p = j.power
    assert p is not None
    what = {Direction.HIGHER_IS_BETTER: "drop", Direction.LOWER_IS_BETTER: "rise"}.get(direction, "degradation")
    goal = f"to detect a {p.degradation:.0%} {what} with {p.required:.0%} power (now {p.probability:.0%})"
    if p.more_requests is None:
        return f"{j.metric}: {p.reason}, {goal}"
    at = f" (~{p.more_seconds:,.0f} s at the current rate)" if p.more_seconds is not None else ""
    return f"{j.metric}: {p.more_requests:,.0f} more canary requests{at} {goal}"


def power_hold(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    """The wave before the last holds until the evidence could have detected every degradation
    spec.analysis.detect names (core/analysis/power.py): condition Powered, True once it could."""
    spec, s = inp.spec.analysis, d.status
    plan = waves(inp, s)
    if spec is None or not spec.detect or len(plan) < 2 or wave_index(s) != len(plan) - 2:
        return d, False
    last = s.analysis.recent[-1] if s.analysis.recent else None
    judged = [j for j in (last.judgements if last is not None else []) if j.power is not None]
    short = [j for j in judged if j.power is not None and j.power.probability < j.power.required]
    label = wave_label(inp, s)
    if short or not judged:
        directions = {m.name: m.direction for m in analysis.effective_metrics(spec)}
        why = "; ".join(_shortfall(j, directions.get(j.metric)) for j in short) or "no judgement of its power yet"
        message = f"wave {label}: holding before the last wave: {why}"
        overdue = _power_overdue(inp, d)
        if overdue is not None and spec.on_inconclusive == "Rollback":
            # Fail safe: the evidence never became enough to promote on; a lack of it is not a Pass.
            d = d.condition(inp, cond.POWERED, False, Reason.NEEDS_MORE_EVIDENCE, message)
            return rollback(inp, d, Reason.ANALYSIS_INCONCLUSIVE, f"wave {label}: spec.analysis.detect not powered "
                            f"{overdue} (spec.analysis.onInconclusive is Rollback): {why}"), True
        if overdue is not None:
            message += f"; not powered {overdue}, holding (spec.analysis.onInconclusive is Hold)"
        if not cond.is_false(s.conditions, cond.POWERED):
            d = d.record(inp, Reason.NEEDS_MORE_EVIDENCE, message)
        return d.condition(inp, cond.POWERED, False, Reason.NEEDS_MORE_EVIDENCE, message), True
    done = ", ".join(f"{j.metric} {j.power.degradation:.0%} ({j.power.probability:.1%})" for j in judged if j.power)
    return d.condition(inp, cond.POWERED, True, Reason.POWERED,
                       f"wave {label}: the evidence could detect {done}"), False


def _power_overdue(inp: Inputs, d: Draft) -> str | None:
    """The power hold's bound, as for a wave without a Pass: the wave's bake plus spec.progressDeadline
    (wall time since the bake began, pauses excluded). Says how long it waited once that is past."""
    s = d.status
    if s.paused or not s.bake_started_at:
        return None
    bake = parse_duration(current_wave(inp, s).bake)
    if seconds_between(s.bake_started_at, inp.now) < bake + parse_duration(inp.spec.progress_deadline):
        return None
    return f"within its bake ({current_wave(inp, s).bake}) plus spec.progressDeadline ({inp.spec.progress_deadline})"
