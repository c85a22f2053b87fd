"""The latency guard (spec.analysis.latency): its metric, its PromQL, and the bucket its threshold must name."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from guarded.api.analysis import Analysis, Direction, Latency
from guarded.core.analysis import LATENCY_GUARD, effective_metrics, judge_config
from guarded.metrics.gather import latency_bucket
from guarded.metrics.provider import Labels, Series
from guarded.metrics.queries import metric_queries

ANALYSIS = Analysis(requests="http_requests_total", orders="orders_total", false_rollback_rate=0.01,
                    latency={"histogram": "http_request_duration_seconds", "threshold": "250ms"})


def exact(series: str, interval: str, look_back: str = "30s") -> str:
    """The exact increase of a counter over an interval, as the guards' templates render it."""
    return (f"sum(clamp_min({series} - (last_over_time({series}[{look_back}] offset {interval}) or "
            f"min_over_time({series}[{interval}])), 0))")


class Buckets:
    """A provider whose histogram has these bucket bounds (as their series spell them)."""

    def __init__(self, bounds: list[str], error: str | None = None) -> None:
        self.bounds, self.error, self.queries = bounds, error, []

    def labels(self, query: str) -> Labels:
        self.queries.append(query)
        return Labels(items=tuple({"le": b} for b in self.bounds), error=self.error)

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        raise AssertionError("not used")

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        raise AssertionError("not used")


def test_the_latency_guard_is_a_third_built_in_guard_judged_lower_is_better_with_its_share_of_alpha() -> None:
    metrics = {m.name: m for m in effective_metrics(ANALYSIS)}
    assert list(metrics) == ["order-rate", "error-rate", LATENCY_GUARD] and LATENCY_GUARD == "slow-request-rate"
    assert metrics[LATENCY_GUARD].direction is Direction.LOWER_IS_BETTER
    cfg = judge_config(metrics[LATENCY_GUARD], ANALYSIS)
    assert cfg.alpha == pytest.approx(0.01 / 6), "3 metrics x 2 judges share falseRollbackRate"
    assert judge_config(metrics["order-rate"], ANALYSIS).alpha == pytest.approx(0.01 / 6)


def test_slow_requests_are_the_count_less_the_threshold_bucket_and_need_that_bucket_to_count_at_all() -> None:
    guard = next(m for m in effective_metrics(ANALYSIS) if m.name == LATENCY_GUARD)
    q = metric_queries(guard, namespace="shop", target="shop", interval="2s", pre_rollout_window="5m",
                       le="0\\.25")
    canary = 'namespace="shop",pod=~"shop-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"'
    count = exact("http_request_duration_seconds_count{" + canary + "}", "2s")
    bucket = exact("http_request_duration_seconds_bucket{" + canary + ',le=~"0\\\\.25"}', "2s")
    assert q.canary.events == f"{count} - {bucket}"
    assert q.canary.requests == f"{count} and {bucket}", "no threshold bucket on the canary: no data, not 0 slow"
    assert "increase(" in q.pre_rollout.events and "[5m]))" in q.pre_rollout.events
    assert 'le=~"0\\\\.25"' in q.pre_rollout.requests


@pytest.mark.parametrize("threshold, unit, bounds, le", [
    ("250ms", "seconds", ["0.1", "0.25", "0.5", "+Inf"], r"0\.25"),
    ("1s", "seconds", ["0.5", "1.0", "+Inf"], r"1\.0"),
    ("1s", "seconds", ["0.5", "1", "+Inf"], "1"),
    ("500ms", "milliseconds", ["100", "500", "+Inf"], "500"),
    # pods of two releases spelling the bound two ways (reviewer's e8): both count, neither is lost
    ("250ms", "seconds", ["0.1", "0.25", "0.250", "+Inf"], r"0\.25|0\.250"),
])
def test_the_threshold_finds_its_bucket_as_the_series_spell_it(threshold: str, unit: str, bounds: list[str],
                                                                le: str) -> None:
    latency = Latency(histogram="h", threshold=threshold, unit=unit)
    provider = Buckets(bounds)
    assert latency_bucket(provider, latency, namespace="shop", target="shop") == (le, None)
    assert provider.queries[0].startswith("group by (le) (h_bucket{")


def test_a_threshold_that_is_no_bucket_bound_is_no_data_naming_the_field_and_the_bounds() -> None:
    latency = Latency(histogram="h", threshold="300ms")
    le, problem = latency_bucket(Buckets(["0.1", "0.25", "0.5", "+Inf"]), latency, namespace="shop", target="shop")
    assert le is None and problem is not None
    assert problem.startswith("spec.analysis.latency.threshold 300ms is no bucket bound of h")
    assert "0.1, 0.25, 0.5, +Inf" in problem
    _, missing = latency_bucket(Buckets([]), latency, namespace="shop", target="shop")
    assert missing is not None and missing.startswith("spec.analysis.latency.histogram: no h_bucket series")
    _, down = latency_bucket(Buckets([], error="Prometheus unreachable"), latency, namespace="shop", target="shop")
    assert down == "Prometheus unreachable"


def test_a_policy_can_require_the_latency_guard_by_its_alias() -> None:
    assert Analysis(latency={"histogram": "h"}).guard_directions()["latency"] is Direction.LOWER_IS_BETTER
    assert Analysis(latency={"histogram": "h"}).latency.threshold == "500ms"


def test_a_bound_spelt_two_ways_is_matched_by_a_regex_of_both_in_the_guard_queries() -> None:
    """Reviewer's e8: the canary's pods export le="0.250", the stable's le="0.25"; an exact le="0.25"
    left the canary without its bucket (no data) so the release could never pass."""
    latency = Latency(histogram="h", threshold="250ms")
    le, problem = latency_bucket(Buckets(["0.250", "0.1", "0.25", "+Inf"]), latency, namespace="shop", target="shop")
    assert problem is None and le is not None
    assert re.fullmatch(le, "0.25") and re.fullmatch(le, "0.250") and not re.fullmatch(le, "0x25")
    guard = next(m for m in effective_metrics(ANALYSIS) if m.name == LATENCY_GUARD)
    q = metric_queries(guard, namespace="shop", target="shop", interval="2s", pre_rollout_window="5m", le=le)
    assert 'le=~"0\\\\.25|0\\\\.250"' in q.canary.requests and 'le=~"0\\\\.25|0\\\\.250"' in q.stable.events
