"""Analysis inside a decision: judge what the shell fetched, roll back on Fail or alert, hold on no data."""

from __future__ import annotations

from guarded.api.common import parse_duration
from guarded.api.rollout import (
    AnalysisStatus,
    PreRolloutCounts,
    Stage,
)
from guarded.core import analysis
from guarded.core.analysis import ANALYSIS_STAGES
from guarded.core.clock import parse, seconds_between, stamp
from guarded.core.judges import Verdict
from guarded.core.step import (
    WAVE_STAGES,
    Step,
)


class Judging(Step):
    def observe_bake(self, state: AnalysisStatus, is_fresh: bool) -> None:
        """Bake time accrues only under observation: from the previous judgement to this one, when both
        had fresh data, and never while paused. The first fresh judgement after a gap accrues nothing."""
        if self.stage != Stage.BAKE or self.s.get("paused") or not is_fresh or state.fresh_since is None:
            return
        since = max(parse(state.last_at or self.s["bake_started_at"]), parse(self.s["bake_started_at"]))
        gained = max(0.0, (self.now - since).total_seconds())
        self.s["baked_seconds"] = round(float(self.s.get("baked_seconds") or 0.0) + gained, 3)

    def analyze(self) -> None:
        """Judge the wave on what the shell fetched; alerts and failures roll back at once."""
        if self.stage not in WAVE_STAGES:
            return
        if self.obs.webhook_alerts:
            self.rollback("AlertFiring", f"wave {self.wave_label()}: alert firing (Alertmanager): "
                          f"{', '.join(self.obs.webhook_alerts)}")
            return
        obs, spec = self.obs.analysis, self.spec.analysis
        if spec is None or self.stage not in ANALYSIS_STAGES:
            return
        if obs is None:
            # Not due in this decision: come back when the next judgement is, whatever else waits longer
            # (a bake), so that a bad canary is judged every interval and not only when its bake ends.
            last = self.s["analysis"].last_at
            interval = parse_duration(spec.interval)
            self.wait(interval if last is None else max(0.05, interval - seconds_between(last, self.now)))
            return
        state = self.s["analysis"]
        stable_serving = self.total - self.canary_target() > 0
        judgements = analysis.evaluate(self.spec, obs, stable_serving=stable_serving)
        verdict = analysis.overall(judgements, obs.alerts, obs.alerts_error)
        intervals = max((len(d.canary) for d in obs.metrics.values()), default=0)
        rec = analysis.record(judgements, verdict=verdict, now=self.now, wave=self.s.get("wave"),
                              alerts=obs.alerts, intervals=intervals)
        pre = list(state.pre_rollout)
        known = {p.metric for p in pre}
        for name, data in sorted(obs.metrics.items()):
            if name not in known and data.pre_rollout is not None and data.error is None:
                pre.append(PreRolloutCounts(metric=name, events=data.pre_rollout.events,
                                            requests=data.pre_rollout.requests))
        # Only a lack of *data* (Prometheus down, failed queries, no traffic, no baseline) counts
        # towards maxInconclusive; evidence that is still accumulating is bounded by the bake's deadline.
        no_data = verdict is Verdict.INCONCLUSIVE and (obs.alerts_error is not None or any(
            j.no_data for j in judgements if j.verdict is Verdict.INCONCLUSIVE))
        inconclusive = state.consecutive_inconclusive + 1 if no_data else 0
        is_fresh = analysis.fresh(spec, obs)
        self.observe_bake(state, is_fresh)
        self.s["analysis"] = state.model_copy(update={
            "last_at": stamp(self.now), "last_verdict": str(verdict), "consecutive_inconclusive": inconclusive,
            "pre_rollout": pre, "recent": [*state.recent, rec][-analysis.RECENT_LIMIT:],
            "fresh_since": (state.fresh_since or stamp(self.now)) if is_fresh else None,
        })
        text = analysis.summary(judgements, obs.alerts)
        changed = state.last_verdict != str(verdict)
        if verdict is Verdict.FAIL:
            reason = "AlertFiring" if obs.alerts else "AnalysisFailed"
            self.rollback(reason, f"wave {self.wave_label()}: {text}")
        elif verdict is Verdict.INCONCLUSIVE:
            if changed:
                self.record("AnalysisInconclusive", f"wave {self.wave_label()}: holding: "
                            f"{obs.alerts_error or '; '.join(j.metric + ': ' + j.reason for j in judgements)}",
                            warning=True)
            if inconclusive >= spec.max_inconclusive and spec.on_inconclusive == "Rollback":
                self.rollback("AnalysisInconclusive", f"wave {self.wave_label()}: no data for {inconclusive} "
                              f"judgements in a row (spec.analysis.maxInconclusive {spec.max_inconclusive})")
        elif changed:
            self.record("AnalysisPassed", f"wave {self.wave_label()}: {text}")
        self.wait(parse_duration(spec.interval))

