"""Power before promotion (core/analysis/power.py): the probability it predicts against simulated degraded
canaries, the requests it says are still needed, and the hold of the wave before the last."""

from __future__ import annotations

import random

import pytest

from guarded.api.analysis import Analysis, Direction
from guarded.core.analysis import Counts, MetricData, Verdict, effective_metrics, judge, judge_config, power
from guarded.core.analysis.statistics import JudgeConfig, grid, stable_rho0

ANALYSIS = Analysis(interval="2s", requests="http_requests_total", orders="orders_total", false_rollback_rate=0.001,
                    detect=[{"metric": "orders", "degradation": 0.2}])
ORDERS = judge_config(next(m for m in effective_metrics(ANALYSIS) if m.name == "order-rate"), ANALYSIS)


def poisson(rng: random.Random, mean: float) -> int:
    # Knuth for small means, normal beyond (enough for these tests' counts)
    if mean > 50:
        return max(0, round(rng.gauss(mean, mean ** 0.5)))
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def simulate(rng: random.Random, *, intervals: int, canary_rps: float, stable_rps: float, ratio: float,
             mult: float) -> MetricData:
    canary, stable = [], []
    for _ in range(intervals):
        nc, ns = poisson(rng, canary_rps * 2), poisson(rng, stable_rps * 2)
        canary.append(Counts(events=poisson(rng, nc * ratio * mult), requests=nc))
        stable.append(Counts(events=poisson(rng, ns * ratio), requests=ns))
    return MetricData(canary=tuple(canary), stable=tuple(stable), pre_rollout=Counts(events=9000, requests=180_000))


def test_a_required_detection_tightens_the_stable_tolerance_to_half_of_it_and_joins_the_grid() -> None:
    assert ORDERS.stable_tolerance == pytest.approx(0.1) and ORDERS.detect_rho == pytest.approx(0.8)
    assert ORDERS.detect_power == 0.95 and ORDERS.pre_rollout_tolerance == 0.5
    loose = Analysis(requests="r", orders="o")
    assert judge_config(effective_metrics(loose)[0], loose).stable_tolerance == 0.2


@pytest.mark.parametrize("intervals", [40, 150, 300])
def test_the_predicted_power_is_a_lower_bound_on_the_simulated_rate_of_failing_a_canary_that_bad(
        intervals: int) -> None:
    """Canaries degraded exactly by the required 20%, at 150 req/s against 150: the share the real judge
    fails by the end is at least the predicted probability (less a sampling margin)."""
    rng = random.Random(intervals)
    runs, failed, predicted = 120, 0, []
    for _ in range(runs):
        data = simulate(rng, intervals=intervals, canary_rps=150, stable_rps=150, ratio=0.05, mult=0.8)
        # the mixture crossed at some prefix: judged on every 10th interval (as often as the engine would, or less)
        failed += any(judge(ORDERS, MetricData(canary=data.canary[:t], stable=data.stable[:t],
                                               pre_rollout=data.pre_rollout)).verdict is Verdict.FAIL
                      for t in range(10, intervals + 1, 10))
        predicted.append(power(ORDERS, data).probability)
    mean_predicted = sum(predicted) / runs
    assert failed / runs >= mean_predicted - 0.1, (failed, mean_predicted)


def test_the_requests_still_needed_are_enough_and_not_far_too_many() -> None:
    rng = random.Random(7)
    data = simulate(rng, intervals=60, canary_rps=150, stable_rps=150, ratio=0.05, mult=1.0)
    first = power(ORDERS, data)
    assert first is not None and first.probability < 0.95 and first.more_requests and first.more_seconds
    assert first.more_seconds == pytest.approx(first.more_requests / 150, rel=0.3)   # 150 canary req/s
    more = round(first.more_requests / 300) + 1   # 300 canary requests per interval
    later = simulate(rng, intervals=more, canary_rps=150, stable_rps=150, ratio=0.05, mult=1.0)
    data = MetricData(canary=data.canary + later.canary, stable=data.stable + later.stable,
                      pre_rollout=data.pre_rollout)
    assert power(ORDERS, data).probability >= 0.9
    shorter = MetricData(canary=data.canary[: 60 + more // 3], stable=data.stable[: 60 + more // 3],
                         pre_rollout=data.pre_rollout)
    assert power(ORDERS, shorter).probability < 0.95


def test_no_data_has_no_power_and_no_requirement_has_no_record() -> None:
    assert power(ORDERS, MetricData(error="Prometheus down")).probability == 0
    assert power(ORDERS, MetricData()).probability == 0
    plain = JudgeConfig(name="x", direction=Direction.HIGHER_IS_BETTER)
    assert power(plain, MetricData()) is None


def test_a_tolerance_that_cannot_tell_the_degradation_apart_says_so() -> None:
    cfg = JudgeConfig(name="x", direction=Direction.HIGHER_IS_BETTER, stable_tolerance=None, pre_rollout_tolerance=0.5,
                      detect_degradation=0.2, detect_power=0.95, alpha=0.001, interval_seconds=2)
    data = simulate(random.Random(1), intervals=30, canary_rps=150, stable_rps=150, ratio=0.05, mult=1.0)
    record = power(cfg, data)
    assert record is not None and record.probability < 0.01 and record.more_requests is None
    assert "no judge can detect it" in record.reason


def test_detect_must_name_a_judged_metric_with_a_fitting_degradation() -> None:
    with pytest.raises(ValueError, match=r"detect\[0\]: metric 'latency' is not judged"):
        Analysis(requests="r", detect=[{"metric": "latency", "degradation": 1}])
    with pytest.raises(ValueError, match=r"detect\[0\]: degradation 1 must be below 1 for orders"):
        Analysis(requests="r", orders="o", detect=[{"metric": "orders", "degradation": 1}])
    ok = Analysis(requests="r", orders="o", detect=[{"metric": "error-rate", "degradation": 1}])
    errors = judge_config(next(m for m in effective_metrics(ok) if m.name == "error-rate"), ok)
    assert errors.detect_rho == 2.0 and errors.stable_tolerance == 0.2


def test_the_strictest_required_detection_of_the_policies_wins_and_the_spec_must_meet_it() -> None:
    from datetime import UTC, datetime

    from guarded.api.policy import RolloutPolicySpec
    from guarded.core import policy as pol

    def named(name: str, degradation: float, power: float = 0.95) -> pol.NamedPolicy:
        return pol.NamedPolicy(name=name, spec=RolloutPolicySpec.model_validate({"rules": {"requiredDetection": [
            {"metric": "orders", "degradation": degradation, "power": power}]}}))

    rules = pol.combine([named("company", 0.3), named("tier-1", 0.2), named("team", 0.25, 0.99)], datetime.now(UTC))
    assert rules.detection["order-rate"].value == 0.2 and rules.detection["order-rate"].set_by == ("tier-1",)
    assert rules.detection_power["order-rate"].value == 0.99
    assert pol.missing_detection(rules, [("orders", 0.2, 0.99)]) == []
    assert pol.missing_detection(rules, [("order-rate", 0.15, 0.995)]) == [], "by the guard's name too"
    [finding] = pol.missing_detection(rules, [("orders", 0.3, 0.99)])
    assert finding == ("spec.analysis.detect must make a 0.2 degradation of 'order-rate' detectable with power 0.99, "
                       "required by tier-1")
    assert pol.missing_detection(rules, [("orders", 0.2, 0.95)]), "a lower power does not meet the rule"
    shown = [r for r in pol.describe(rules).rules if r.rule == "requiredDetection"]
    assert shown and shown[0].value.startswith("order-rate 0.2")


def test_a_policy_naming_the_guard_or_its_shortcut_is_one_rule_met_by_either_spelling() -> None:
    """Reviewer's e1: a policy on 'order-rate' was never met by a spec detecting 'orders', and two policies
    spelling the metric differently were two rules instead of the stricter one."""
    from datetime import UTC, datetime

    from guarded.api.policy import RolloutPolicySpec
    from guarded.core import policy as pol

    def named(name: str, metric: str, degradation: float) -> pol.NamedPolicy:
        return pol.NamedPolicy(name=name, spec=RolloutPolicySpec.model_validate({"rules": {"requiredDetection": [
            {"metric": metric, "degradation": degradation, "power": 0.95}]}}))

    by_guard = pol.combine([named("tier-1", "order-rate", 0.2)], datetime.now(UTC))
    assert pol.missing_detection(by_guard, [("orders", 0.2, 0.95)]) == []
    both = pol.combine([named("a", "orders", 0.2), named("b", "order-rate", 0.1)], datetime.now(UTC))
    assert list(both.detection) == ["order-rate"] and both.detection["order-rate"].set_by == ("b",)
    assert pol.missing_detection(both, [("orders", 0.2, 0.95)]), "the stricter 0.1 of policy b applies"
    assert pol.missing_detection(both, [("orders", 0.1, 0.95)]) == []


@pytest.mark.parametrize("degradation", [0.01, 0.03, 0.035, 0.04, 0.05])
def test_a_small_required_degradation_keeps_its_grid_point_and_ample_evidence_powers_it(degradation: float) -> None:
    """Reviewer's e1: the required point within 2% of rho0 was dropped from the grid, so 10^7 requests
    a side never powered orders -3%."""
    a = Analysis(requests="r", orders="o", detect=[{"metric": "orders", "degradation": degradation}])
    cfg = judge_config(next(m for m in effective_metrics(a) if m.name == "order-rate"), a)
    assert cfg.detect_rho in grid(cfg.direction, stable_rho0(cfg), cfg.detect_rho)
    big = MetricData(canary=tuple(Counts(events=50_000, requests=1e6) for _ in range(10)),
                     stable=tuple(Counts(events=50_000, requests=1e6) for _ in range(10)),
                     pre_rollout=Counts(events=9000, requests=180_000))
    record = power(cfg, big)
    assert record is not None and record.more_requests is not None, "detectable: a finite amount more suffices"
    if degradation >= 0.03:   # 10^7 requests a side are enough from -3% on (orders -1% needs ~5x10^7 more)
        assert record.probability >= record.required


def test_a_detect_no_judge_can_satisfy_is_refused_at_validation_naming_the_entry() -> None:
    """Reviewer's e1: with stableTolerance null only the PreRollout judge (0.5) is left; 0.2 can never be
    detected, so the power hold would wait forever."""
    metric = {"name": "order-rate", "direction": "HigherIsBetter", "events": "e", "requests": "r",
              "stableTolerance": None}
    with pytest.raises(ValueError, match=r"spec\.analysis\.detect\[1\]: degradation 0.2 of orders can never be "
                                         r"detected: its stableTolerance is null and its preRolloutTolerance is 0.5"):
        Analysis(requests="r", orders="o", metrics=[metric],
                 detect=[{"metric": "error-rate", "degradation": 0.2}, {"metric": "orders", "degradation": 0.2}])
    with pytest.raises(ValueError, match="preRolloutTolerance is disabled"):
        Analysis(requests="r", orders="o", metrics=[{**metric, "preRolloutTolerance": None}],
                 detect=[{"metric": "order-rate", "degradation": 0.5}])
    beyond = Analysis(requests="r", orders="o", metrics=[metric], detect=[{"metric": "orders", "degradation": 0.6}])
    assert beyond.detect[0].degradation == 0.6
