"""Analysis inside the engine: failures and alerts roll back, no data holds, evidence is kept."""

from __future__ import annotations

from specs import analysis, spec, waves
from world import World

from guarded.api.stages import Phase, Stage
from guarded.core.analysis import AnalysisObservation, Counts, MetricData

WAVES = waves("1 pod", "50%", "100%", bake="10s")
JUDGED = {"interval": "5s", "maxInconclusive": 20}  # judged every 5 s; 20 inconclusive judgements in a row at most


def metrics(world: World, *, canary_orders: float, canary_errors: float = 0.5) -> AnalysisObservation:
    """Per 5 s interval since the wave's analysis began: 50 req/s per pod, 5% orders, 0.5% errors."""
    since = world.status.analysis.since
    assert since is not None
    elapsed = (world.now.timestamp() - _ts(since))
    steps = max(int(elapsed // 5), 0)
    canary_pods = world.state("shop-canary").ready if world.state("shop-canary") else 0  # type: ignore[union-attr]
    stable_pods = world.state("shop").ready  # type: ignore[union-attr]
    c_req, s_req = 250.0 * canary_pods, 250.0 * stable_pods
    pre = Counts(events=0.05 * 30000, requests=30000)
    pre_errors = Counts(events=0.005 * 30000, requests=30000)
    orders = MetricData(canary=(Counts(c_req * canary_orders, c_req),) * steps,
                        stable=(Counts(s_req * 0.05, s_req),) * steps, pre_rollout=pre)
    errors = MetricData(canary=(Counts(c_req * canary_errors / 100, c_req),) * steps,
                        stable=(Counts(s_req * 0.005, s_req),) * steps, pre_rollout=pre_errors)
    return AnalysisObservation(metrics={"order-rate": orders, "error-rate": errors})


def _ts(text: str) -> float:
    from guarded.core.clock import parse
    return parse(text).timestamp()


def test_a_healthy_release_passes_analysis_in_every_wave_and_is_promoted() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)),
                  analysis_source=lambda w: metrics(w, canary_orders=0.05))
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED
    assert world.status.analysis.recent[-1].verdict in ("Pass", "Inconclusive")
    assert any(h.reason == "AnalysisPassed" for h in world.status.history)


def test_an_order_collapse_rolls_back_during_the_first_wave_with_evidence() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)),
                  analysis_source=lambda w: metrics(w, canary_orders=0.0005))
    world.run_until_done()
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.status.rollback_reason == "AnalysisFailed"
    failing = next(h for h in world.status.history if h.reason == "RollingBack")
    assert failing.wave == 0 and "order-rate" in failing.message
    record = world.status.analysis.recent[-1]
    assert record.verdict == "Fail"
    order = next(j for j in record.judgements if j.metric == "order-rate")
    stable = next(e for e in order.evidence if e.judge == "Stable")
    assert stable.log_lr >= stable.log_threshold and stable.canary_requests > 0
    assert world.deployments["shop"].replicas == 10 and "shop-canary" not in world.deployments


def test_status_keeps_the_numbers_of_the_newest_judgement_of_each_wave_and_the_verdicts_of_the_others() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)),
                  analysis_source=lambda w: metrics(w, canary_orders=0.05))
    world.run_until_done()
    recent = world.status.analysis.recent
    assert len(recent) == 8 and {r.wave for r in recent} >= {1, 2}
    for record, later in zip(recent, [*recent[1:], None], strict=True):
        full = later is None or later.wave != record.wave
        for j in record.judgements:
            assert j.verdict and j.reason and j.evidence  # every record keeps what was decided
            assert all(e.canary_ratio is not None and e.log_lr != 0 for e in j.evidence)  # and its trajectory
            assert all((e.canary_requests is not None and e.log_threshold is not None) == full
                       for e in j.evidence), record
    last_of_wave_1 = [r for r in recent if r.wave == 1][-1]
    stable = next(e for e in last_of_wave_1.judgements[0].evidence if e.judge == "Stable")
    assert stable.canary_requests > 0  # the judgement that promoted wave 1, with its numbers


def test_a_failing_judgement_keeps_its_numbers_as_does_the_pass_that_promoted_the_wave_before() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)),
                  analysis_source=lambda w: metrics(w, canary_orders=0.025))  # -50%: wave 0 is too small to tell
    world.run_until_done()
    recent = world.status.analysis.recent
    assert world.status.rollback_reason == "AnalysisFailed" and (recent[-1].wave, recent[-1].verdict) == (1, "Fail")
    order = next(j for j in recent[-1].judgements if j.metric == "order-rate")
    assert [e.judge for e in order.evidence] == ["Stable", "PreRollout"]
    wave_0 = [r for r in recent if r.wave == 0]
    assert len(wave_0) >= 2 and wave_0[-1].verdict == "Pass"
    assert all(e.canary_requests for j in wave_0[-1].judgements for e in j.evidence)
    assert all(e.canary_requests is None for r in wave_0[:-1] for j in r.judgements for e in j.evidence)


def test_no_data_holds_the_wave_past_its_bake_and_then_rolls_back_by_default() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)), analysis_source=lambda w: AnalysisObservation(
        metrics={}, alerts_error="Prometheus unreachable"))

    def never_advances(world: World, _: object) -> None:
        assert world.status.wave in (0, None), "a wave never advances without evidence"

    world.run_until(stage=Stage.ROLLED_BACK, limit=300, each=never_advances)
    assert world.status.rollback_reason == "AnalysisInconclusive"


def test_with_on_inconclusive_hold_no_data_holds_forever_and_data_resumes_it() -> None:
    source = {"down": True}

    def prometheus(w: World) -> AnalysisObservation:
        if source["down"]:
            return AnalysisObservation(metrics={}, alerts_error="Prometheus unreachable")
        return metrics(w, canary_orders=0.05)

    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED, onInconclusive="Hold")), analysis_source=prometheus)
    world.run_for(200)
    assert world.status.stage == Stage.BAKE and world.status.wave == 0
    assert world.status.analysis.consecutive_inconclusive > 4
    source["down"] = False
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED


def test_an_alert_pushed_by_alertmanager_rolls_back_at_once() -> None:
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED, alerts={"matchLabels": {"service": "shop"}})),
                  analysis_source=lambda w: metrics(w, canary_orders=0.05))
    world.run_until(stage=Stage.BAKE)
    world.webhook_alerts = ("CheckoutDown",)
    decision = world.step()
    assert decision.status.stage == Stage.ROLLING_BACK
    assert decision.status.rollback_reason == "AlertFiring"
    assert "CheckoutDown" in decision.status.history[-1].message


def test_a_firing_alert_from_prometheus_rolls_back() -> None:
    def firing(w: World) -> AnalysisObservation:
        healthy = metrics(w, canary_orders=0.05)
        return AnalysisObservation(metrics=healthy.metrics, alerts=("HighLatency",))

    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED, alerts={"matchLabels": {"service": "shop"}})),
                  analysis_source=firing)
    world.run_until_done()
    assert world.status.rollback_reason == "AlertFiring"
    assert world.status.analysis.recent[-1].alerts == ["HighLatency"]


def test_a_baking_wave_asks_to_be_woken_for_its_next_judgement_not_at_the_end_of_the_bake() -> None:
    """A decision without analysis data (not due yet) must still come back within one interval, or a bad
    canary would serve a whole bake (minutes in production) before it is judged again."""
    world = World(spec(waves=WAVES, analysis=analysis(**JUDGED)),
                  analysis_source=lambda w: metrics(w, canary_orders=0.05))
    world.analysis_source = None  # from here on, decisions get no analysis data, as between two judgements
    decision = world.run_until(stage=Stage.BAKE, limit=200)
    assert decision is not None and decision.status.stage == Stage.BAKE
    assert decision.requeue_after is not None and decision.requeue_after <= 5.0


# -- a bake is time under observation ---------------------------------------------------------------

def _bake_world(outage: tuple[float, float] | None = None, stale_newest: bool = False) -> World:
    """Wave 1 bakes 10 s judged every 5 s; Prometheus is down for `outage` (seconds after T0)."""
    def prometheus(w: World) -> AnalysisObservation:
        t = w.tick * w.seconds_per_tick
        if outage is not None and outage[0] <= t < outage[1]:
            return AnalysisObservation(metrics={}, alerts_error="Prometheus unreachable")
        healthy = metrics(w, canary_orders=0.05)
        if not stale_newest:
            return healthy
        # Prometheus answers, but the newest interval has no samples (scrapes missing since a restart):
        # what a Pass would be computed from is older than the latest gap.
        return AnalysisObservation(metrics={name: MetricData(
            canary=(*data.canary[:-1], None), stable=data.stable, pre_rollout=data.pre_rollout)
            for name, data in healthy.metrics.items()})
    return World(spec(waves=WAVES, analysis=analysis(**JUDGED, onInconclusive="Hold")), analysis_source=prometheus)


def _wave_advanced_at(world: World, limit: int = 400) -> float:
    world.run_until(predicate=lambda w: (w.status.wave or 0) >= 1, limit=limit)
    return world.tick * world.seconds_per_tick


def test_time_without_fresh_data_does_not_count_as_bake() -> None:
    baseline = _wave_advanced_at(_bake_world())
    # Prometheus down from before the bake starts for 90 s, far longer than the 10 s bake.
    world = _bake_world(outage=(1, 91))
    advanced = _wave_advanced_at(world)
    assert advanced >= 91 + 10, f"advanced {advanced - 91:.0f}s after Prometheus returned; the bake is 10s"
    assert advanced - 91 <= baseline + 10  # and no later than a full bake (plus a judgement) after it
    entered_bake = next(h.time for h in world.status.history if h.reason == "WaveReady")
    assert entered_bake  # the wave was baking during the outage, and still advanced only after it


def test_an_outage_mid_bake_pauses_the_bake_clock_and_keeps_what_was_observed() -> None:
    world = _bake_world(outage=(12, 60))
    advanced = _wave_advanced_at(world)
    # Some of the 10 s were observed before the outage; the rest must be observed after it.
    assert advanced > 60
    baked_before = next(r for r in reversed(world.status.history) if r.reason == "WaveReady")
    assert baked_before is not None


def test_a_pass_from_intervals_before_a_gap_never_advances_a_wave() -> None:
    world = _bake_world(stale_newest=True)

    def never_advances(world: World, _: object) -> None:
        assert (world.status.wave or 0) == 0, "advanced on a Pass that did not look at the latest interval"

    world.run_for(200, each=never_advances)
    assert world.status.stage == Stage.BAKE
    assert world.status.baked_seconds == 0.0
    assert "no fresh data" in world.status.message


def test_the_bake_message_says_how_much_was_observed() -> None:
    world = _bake_world()
    world.run_until(stage=Stage.BAKE, predicate=lambda w: bool(w.status.baked_seconds))
    assert "under observation" in world.status.message and "s observed" in world.status.message
