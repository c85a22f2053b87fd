"""The Prometheus provider against a real Prometheus: values, clear errors, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from guarded.metrics.prometheus import PrometheusProvider
from testbed import Cluster


@pytest.fixture
def provider(cluster: Cluster) -> PrometheusProvider:
    if cluster.prometheus_url is None:
        pytest.skip("needs GUARDED_TEST_PROMETHEUS_URL")
    return PrometheusProvider(cluster.prometheus_url)


def test_a_range_query_returns_one_value_per_step(provider: PrometheusProvider) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    series = provider.range("vector(7)", start=end - timedelta(seconds=10), end=end, step_seconds=2)
    assert series.error is None
    assert sorted(series.values) == [(end - timedelta(seconds=s)).timestamp() for s in (10, 8, 6, 4, 2, 0)]
    assert set(series.values.values()) == {7.0}


def test_a_bad_query_is_an_error_that_says_so(provider: PrometheusProvider) -> None:
    series = provider.instant("sum(rate(http_requests_total[5s]")
    assert series.values == {}
    assert series.error is not None and series.error.startswith("bad query")


def test_an_unreachable_prometheus_is_an_error_not_an_exception() -> None:
    down = PrometheusProvider("http://127.0.0.1:9", timeout=1, retries=0)
    series = down.instant("vector(1)")
    assert series.error is not None and "unreachable" in series.error
    end = datetime.now(UTC)
    ranged = down.range("vector(1)", start=end - timedelta(seconds=10), end=end, step_seconds=2)
    assert ranged.values == {} and ranged.error is not None and "unreachable" in ranged.error
    labels = down.labels("ALERTS")
    assert labels.items == () and labels.error is not None and "unreachable" in labels.error


def test_a_query_that_returns_several_series_is_refused(provider: PrometheusProvider) -> None:
    two = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'
    series = provider.instant(two)
    assert series.error is not None and "aggregate" in series.error


def test_a_scalar_answer_is_one_value_without_labels(provider: PrometheusProvider) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    series = provider.instant("scalar(vector(3))", at=at)
    assert series.error is None and series.values == {at.timestamp(): 3.0}
    grouped = provider.instant_by("vector(3)", "pod", at=at)
    assert grouped.error is not None and "one series per pod" in grouped.error


def test_a_range_is_asked_at_the_exact_times_given(provider: PrometheusProvider) -> None:
    end = datetime.now(UTC).replace(microsecond=500_000)   # half a second: not rounded to a whole one
    series = provider.range("vector(1)", start=end - timedelta(seconds=5), end=end, step_seconds=2.5)
    assert sorted(series.values) == [(end - timedelta(seconds=s)).timestamp() for s in (5, 2.5, 0)]
