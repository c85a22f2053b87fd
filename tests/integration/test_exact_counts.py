"""The counts the judges get are the counts that happened: every increment once, none scaled up.

The judges' false-rollback bound assumes each interval's events are Poisson counts. PromQL's
`increase(x[2s])` at a 2 s step, with Prometheus scraping every second, reads only the samples inside each
window: the increment between two windows is lost and the rest is scaled up to the window, so at that
interval half of the counts are dropped and the other half doubled (every count even, twice as variable as
Poisson), and a healthy canary is rolled back far more often than falseRollbackRate says. The guards'
templates take the last sample at each interval's end minus the last one at its start instead; this checks
them against the real Prometheus scraping the traffic simulator.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from guarded.api.analysis import Analysis
from guarded.core.analysis import effective_metrics
from guarded.metrics.prometheus import PrometheusProvider
from guarded.metrics.queries import FIRST, metric_queries, pod_split, selectors
from rollouts import serving_shop, simulated_shop
from testbed import Cluster
from traffic import prom

INTERVAL = 2
STEPS = 12


@pytest.fixture
def provider(cluster: Cluster) -> PrometheusProvider:
    if cluster.prometheus_url is None:
        pytest.skip("needs GUARDED_TEST_PROMETHEUS_URL")
    return PrometheusProvider(cluster.prometheus_url)


def test_the_interval_counts_add_up_to_the_counters_increase_each_a_whole_count(
        cluster: Cluster, namespace: str, provider: PrometheusProvider) -> None:
    serving_shop(cluster, namespace, simulated_shop(replicas=2))
    error_rate = next(m for m in effective_metrics(Analysis(requests="http_requests_total", orders="orders_total"))
                      if m.name == "error-rate")
    queries = metric_queries(error_rate, namespace=namespace, target="shop", interval=f"{INTERVAL}s",
                             pre_rollout_window="5m")
    serving_since = datetime.now(UTC)
    time.sleep(STEPS * INTERVAL + 4)  # the window, and the scrapes of its last second
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    start = end - timedelta(seconds=STEPS * INTERVAL)
    assert start >= serving_since - timedelta(seconds=1)
    # The shop's pods are not canaries: they are what the stable selector selects.
    requests = provider.range(queries.stable.requests, start=start, end=end, step_seconds=INTERVAL)
    errors = provider.range(queries.stable.events, start=start, end=end, step_seconds=INTERVAL)
    assert requests.error is None and errors.error is None
    counted = [v for t, v in sorted(requests.values.items()) if t > start.timestamp()]  # the intervals after start
    assert len(counted) == STEPS
    stable = selectors(namespace, "shop").stable
    total = prom(cluster, f"sum(http_requests_total{{{stable}}})", at=end.timestamp()) - \
        prom(cluster, f"sum(http_requests_total{{{stable}}})", at=start.timestamp())
    assert total > 1000
    assert sum(counted) == pytest.approx(total), "every increment counted once, none extrapolated"
    error_counts = list(errors.values.values())
    assert all(v == int(v) for v in counted + error_counts), "counts of requests, not scaled estimates"


def test_a_new_pod_s_counts_per_pod_add_up_to_its_counter_from_zero(
        cluster: Cluster, namespace: str, provider: PrometheusProvider) -> None:
    """The per-pod form of a guard's template (the shared queries') gives, per pod, the increase over each
    interval and, for a canary pod, under `<pod>/first`, the first value of a series first seen in it: for
    canary pods that began in the window, the two add up to the counter's whole value (a new pod counted from
    zero, metrics/gather), where the increases alone miss what the pod served before its first scrape."""
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=INTERVAL)
    start = before - timedelta(seconds=before.timestamp() % INTERVAL)   # on the grid, before the pods' first sample
    serving_shop(cluster, namespace, simulated_shop("shop-canary", replicas=2))   # pods named as a canary's
    time.sleep(STEPS * INTERVAL + 4)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    end -= timedelta(seconds=end.timestamp() % INTERVAL)
    requests = next(m for m in effective_metrics(Analysis(requests="http_requests_total")) if m.name == "error-rate")
    split = pod_split(requests.requests, namespace=namespace, target="shop", interval=f"{INTERVAL}s")
    assert split is not None
    grouped = provider.range_by(split.query, "pod", start=start, end=end, step_seconds=INTERVAL)
    assert grouped.error is None
    pods = sorted(p for p in grouped.series if not p.endswith(FIRST))
    assert len(pods) == 2 and all(re.fullmatch(split.canary, p) for p in pods)
    for pod in pods:
        increases = sum(grouped.series[pod].values())
        first = grouped.series.get(pod + FIRST, {})
        assert len(first) == 1, f"{pod}: one first value, in the interval of its first sample ({first})"
        counter = prom(cluster, f'sum(http_requests_total{{namespace="{namespace}",pod="{pod}"}})',
                       at=end.timestamp())
        assert counter > 100
        assert increases + sum(first.values()) == pytest.approx(counter), f"{pod}: counted from zero, once"
