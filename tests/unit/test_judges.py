"""The judges on generated counts: collapses fail at once, healthy noise almost never fails."""

from __future__ import annotations

import math
import random

import pytest

from guarded.api.analysis import Direction, JudgementRecord, Verdict
from guarded.core.analysis.statistics import Counts, JudgeConfig, MetricData, judge

ORDERS = JudgeConfig(name="order-rate", direction=Direction.HIGHER_IS_BETTER, alpha=0.01)
ERRORS = JudgeConfig(name="error-rate", direction=Direction.LOWER_IS_BETTER, alpha=0.01)


def poisson(rng: random.Random, lam: float) -> int:
    if lam > 60:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def traffic(rng: random.Random, *, intervals: int, rps: float, seconds: float, canary_share: float,
            canary_ratio: float, stable_ratio: float, pre_ratio: float | None = None) -> MetricData:
    canary, stable = [], []
    for _ in range(intervals):
        nc = poisson(rng, rps * seconds * canary_share)
        ns = poisson(rng, rps * seconds * (1 - canary_share))
        canary.append(Counts(events=poisson(rng, nc * canary_ratio), requests=nc))
        stable.append(Counts(events=poisson(rng, ns * stable_ratio), requests=ns))
    pre_n = poisson(rng, rps * 300)
    pre = Counts(events=poisson(rng, pre_n * (pre_ratio if pre_ratio is not None else stable_ratio)), requests=pre_n)
    return MetricData(canary=tuple(canary), stable=tuple(stable), pre_rollout=pre)


def test_a_99_percent_order_drop_fails_on_the_first_interval_at_realistic_volume() -> None:
    # 10 pods at 50 req/s each, one canary pod, 5% of requests order; one 5 s interval.
    # Expected canary orders in that interval: 250 requests x 5% = 12.5 before, 0.125 after.
    caught = {1: 0, 2: 0}
    for intervals in caught:
        rng = random.Random(7)
        for _ in range(200):
            data = traffic(rng, intervals=intervals, rps=500, seconds=5, canary_share=0.1,
                           canary_ratio=0.0005, stable_ratio=0.05)
            caught[intervals] += judge(ORDERS, data).verdict is Verdict.FAIL
    assert caught[1] >= 180, f"only {caught[1]}/200 first intervals caught the collapse"
    assert caught[2] == 200, f"only {caught[2]}/200 caught it within two intervals"


def test_an_error_ratio_rising_from_half_a_percent_to_five_fails_within_three_intervals() -> None:
    rng = random.Random(11)
    caught = 0
    for _ in range(200):
        data = traffic(rng, intervals=3, rps=500, seconds=5, canary_share=0.1,
                       canary_ratio=0.05, stable_ratio=0.005)
        caught += judge(ERRORS, data).verdict is Verdict.FAIL
    assert caught >= 195


@pytest.mark.parametrize("config, ratio", [(ORDERS, 0.05), (ERRORS, 0.005)])
def test_healthy_noisy_rollouts_fail_less_often_than_alpha_however_often_they_are_judged(
        config: JudgeConfig, ratio: float) -> None:
    # 250 healthy waves of 60 intervals each, judged after every interval (60 looks each).
    rng = random.Random(2026)
    runs, false_fails = 250, 0
    for _ in range(runs):
        data = traffic(rng, intervals=60, rps=500, seconds=5, canary_share=0.1, canary_ratio=ratio, stable_ratio=ratio)
        for look in range(1, 61):
            partial = MetricData(canary=data.canary[:look], stable=data.stable[:look], pre_rollout=data.pre_rollout)
            if judge(config, partial).verdict is Verdict.FAIL:
                false_fails += 1
                break
    assert false_fails / runs <= config.alpha, f"{false_fails}/{runs} healthy waves failed"


def test_a_drop_for_every_version_is_caught_by_the_pre_rollout_baseline_not_the_stable_one() -> None:
    rng = random.Random(5)
    data = traffic(rng, intervals=2, rps=500, seconds=5, canary_share=0.1,
                   canary_ratio=0.0005, stable_ratio=0.0005, pre_ratio=0.05)
    result = judge(ORDERS, data)
    assert result.verdict is Verdict.FAIL
    by_judge = {e.judge: e.verdict for e in result.evidence}
    assert by_judge == {"Stable": Verdict.PASS, "PreRollout": Verdict.FAIL} or \
        by_judge == {"Stable": Verdict.INCONCLUSIVE, "PreRollout": Verdict.FAIL}


@pytest.mark.parametrize("data, why", [
    (MetricData(error="connection refused"), "connection refused"),
    (MetricData(), "no canary requests"),
    (MetricData(canary=(Counts(0, 0),), stable=(Counts(10, 100),), pre_rollout=Counts(5, 100)), "no canary"),
    (MetricData(canary=(Counts(5, 500),), stable=(Counts(0, 0),), pre_rollout=Counts(5, 100)), "no baseline"),
    (MetricData(canary=(Counts(5, 500),), stable=(Counts(25, 500),), pre_rollout=None), "no pre-rollout"),
])
def test_no_data_is_never_a_pass(data: MetricData, why: str) -> None:
    result = judge(ORDERS, data)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert why in result.reason


def test_too_few_canary_requests_is_inconclusive_not_pass() -> None:
    data = MetricData(canary=(Counts(2, 40),), stable=(Counts(20, 400),), pre_rollout=Counts(500, 10000))
    assert judge(ORDERS, data).verdict is Verdict.INCONCLUSIVE


def test_a_healthy_canary_with_enough_traffic_passes_with_evidence() -> None:
    data = MetricData(canary=(Counts(25, 500),) * 3, stable=(Counts(225, 4500),) * 3, pre_rollout=Counts(2500, 50000))
    result = judge(ORDERS, data)
    assert result.verdict is Verdict.PASS
    stable = next(e for e in result.evidence if e.judge == "Stable")
    assert stable.canary_events == 75 and stable.canary_requests == 1500
    assert stable.reference_ratio == pytest.approx(0.05)
    assert stable.log_lr < stable.log_threshold


def test_absolute_bounds() -> None:
    bounded = JudgeConfig(name="errors", direction=Direction.LOWER_IS_BETTER, stable_tolerance=None,
                          pre_rollout_tolerance=None, max_ratio=0.01)
    bad = MetricData(canary=(Counts(40, 1000),))
    good = MetricData(canary=(Counts(2, 1000),))
    assert judge(bounded, bad).verdict is Verdict.FAIL
    assert judge(bounded, good).verdict is Verdict.PASS


def test_the_stable_judge_steps_aside_when_no_stable_pod_serves() -> None:
    data = MetricData(canary=(Counts(25, 500),) * 3, stable=(Counts(0, 0),) * 3, pre_rollout=Counts(2500, 50000))
    assert judge(ORDERS, data, stable_serving=False).verdict is Verdict.PASS


@pytest.mark.parametrize("config, bad, good", [(ORDERS, 0.0005, 0.05), (ERRORS, 0.05, 0.005)])
def test_a_degraded_canary_is_never_passed_on_thin_evidence(config: JudgeConfig, bad: float, good: float) -> None:
    # One canary pod among ten at low traffic: evidence builds slowly, so Pass must wait for it.
    rng = random.Random(99)
    for _ in range(100):
        data = traffic(rng, intervals=40, rps=60, seconds=2, canary_share=0.1, canary_ratio=bad, stable_ratio=good)
        for look in range(1, 41):
            partial = MetricData(canary=data.canary[:look], stable=data.stable[:look], pre_rollout=data.pre_rollout)
            verdict = judge(config, partial).verdict
            assert verdict is not Verdict.PASS, f"passed a degraded canary after {look} intervals"
            if verdict is Verdict.FAIL:
                break


def test_a_judgement_is_the_record_a_status_keeps_and_says_whether_data_was_missing() -> None:
    failed = judge(ORDERS, MetricData(canary=(Counts(0, 5000),), stable=(Counts(250, 5000),), pre_rollout=None))
    assert failed.verdict is Verdict.FAIL and not failed.no_data
    wire = failed.to_wire()
    assert wire["verdict"] == "Fail" and {e["judge"]: e["verdict"] for e in wire["evidence"]} == {
        "Stable": "Fail", "PreRollout": "Inconclusive"}
    assert "noData" not in wire and all("noData" not in e for e in wire["evidence"]), "in memory only"
    again = JudgementRecord.model_validate(wire)
    assert again.verdict is Verdict.FAIL and again.evidence[0].verdict is Verdict.FAIL
    assert again.model_copy(update={"evidence": failed.evidence}) == failed
    # Ratios are kept to six decimals; counts to three.
    stable = failed.evidence[0]
    assert stable.canary_ratio == 0.0 and stable.reference_ratio == 0.05 and stable.canary_requests == 5000


@pytest.mark.parametrize("data, no_data", [
    (MetricData(error="connection refused"), True),
    (MetricData(), True),
    (MetricData(canary=(Counts(5, 500),), stable=(Counts(0, 0),), pre_rollout=None), True),
    (MetricData(canary=(Counts(2, 40),), stable=(Counts(20, 400),), pre_rollout=Counts(500, 10000)), False),
])
def test_inconclusive_for_want_of_data_is_told_from_inconclusive_for_want_of_evidence(
        data: MetricData, no_data: bool) -> None:
    result = judge(ORDERS, data)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.no_data is no_data


def test_each_configured_judge_counts_once() -> None:
    assert ORDERS.judges == 2
    assert JudgeConfig(name="x", direction=Direction.HIGHER_IS_BETTER, min_ratio=0.1, max_ratio=0.5).bound == 0.1
    assert JudgeConfig(name="x", direction=Direction.LOWER_IS_BETTER, min_ratio=0.1, max_ratio=0.5).judges == 3
    assert JudgeConfig(name="x", direction=Direction.LOWER_IS_BETTER, stable_tolerance=None,
                       pre_rollout_tolerance=None, min_ratio=0.1).judges == 0


def test_a_thin_pre_rollout_baseline_is_named_when_it_holds_the_wave() -> None:
    # A service with 2 s of history (600 requests, 30 orders): its conservative bound on the order ratio is
    # far below the real 5%, and that, not the healthy canary, is what the PreRollout judge still waits on.
    data = MetricData(canary=(Counts(25, 500),), stable=(Counts(225, 4500),), pre_rollout=Counts(30, 600))
    record = judge(ORDERS, data)
    pre = next(e for e in record.evidence if e.judge == "PreRollout")
    assert pre.verdict is Verdict.INCONCLUSIVE
    assert "not enough evidence yet" in pre.reason
    assert "pre-rollout baseline: 30 events in 600 requests" in pre.reason
    assert pre.reference_ratio is not None and pre.reference_ratio < 0.05 * 0.6
    assert f"taken at {pre.reference_ratio:.5f} per request" in pre.reason
    stable = next(e for e in record.evidence if e.judge == "Stable")
    assert "pre-rollout" not in stable.reason
