"""Queries: names are escaped, shortcuts expand to the guards a tier-1 service needs, the false-rollback
budget is split over every judge, and one analysis step asks Prometheus what it must, in order."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from guarded.api.analysis import Analysis, Direction, Metric
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis import SCRAPE_LAG_SECONDS, Counts, MetricData, effective_metrics, judge_config, judges_of
from guarded.core.clock import stamp
from guarded.metrics.gather import gather
from guarded.metrics.provider import Labels, Series
from guarded.metrics.queries import escape_label_value, render, selectors


def test_a_hostile_namespace_or_name_cannot_break_out_of_the_label_matcher() -> None:
    sel = selectors('shop"} or vector(1) or {x="', "web.v2")
    # The quote is escaped, so the whole value stays one string literal.
    assert 'namespace="shop\\"} or vector(1) or {x=\\""' in sel.canary
    # Regex metacharacters of the name match literally.
    assert 'pod=~"web\\\\.v2-canary-' in sel.canary
    query = render("sum(increase(x{{{selector}}}[{{interval}}]))", selector=sel.stable, interval="5s",
                   namespace="n", target="t")
    unescaped_quotes = re.findall(r'(?<!\\)"', query)
    assert len(unescaped_quotes) == 4, "two label matchers, each one quoted literal"


def test_escape_label_value() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_two_counter_names_give_an_order_rate_and_an_error_rate_guard() -> None:
    metrics = {m.name: m for m in effective_metrics(Analysis(requests="http_requests_total", orders="orders_total"))}
    assert set(metrics) == {"order-rate", "error-rate"}
    assert metrics["order-rate"].direction == "HigherIsBetter"
    assert metrics["error-rate"].direction == "LowerIsBetter"
    sel = selectors("shop", "shop")
    errors = render(metrics["error-rate"].events, selector=sel.canary, interval="5s", namespace="shop", target="shop")
    series = 'http_requests_total{namespace="shop",pod=~"shop-canary-[a-z0-9]{1,10}-[a-z0-9]{5}",code=~"5.."}'
    assert errors == (f"sum(clamp_min({series} - (last_over_time({series}[30s] offset 5s) or "
                      f"min_over_time({series}[5s])), 0))")


def test_the_stable_selector_does_not_match_canary_pods() -> None:
    sel = selectors("shop", "shop")
    stable = re.search(r'pod=~"([^"]+)"', sel.stable).group(1)  # type: ignore[union-attr]
    canary = re.search(r'pod=~"([^"]+)"', sel.canary).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(stable, "shop-7d4b9c8f6d-x2k9p")
    assert not re.fullmatch(stable, "shop-canary-5d9b556f9d-j6s4k")
    assert re.fullmatch(canary, "shop-canary-5d9b556f9d-j6s4k")
    assert not re.fullmatch(canary, "shop-7d4b9c8f6d-x2k9p")


# gather: the queries one analysis step runs, in order, and what it makes of the answers.

NOW = datetime(2026, 1, 1, 12, 0, 12, 500_000, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeProvider:
    """Answers every query with the same counts; fails the queries that contain `fail`."""

    def __init__(self, fail: str | None = None, alerts: tuple[str, ...] = ()) -> None:
        self.asked: list[tuple[str, str]] = []
        self.fail, self.alerts = fail, alerts

    def _error(self, query: str) -> str | None:
        return f"refused {query}" if self.fail and self.fail in query else None

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        self.asked.append(("range", query))
        if error := self._error(query):
            return Series(error=error)
        value = 5.0 if "orders_total" in query or "code=~" in query else 100.0
        steps = int((end - start).total_seconds() // step_seconds) + 1
        return Series(values={(start + timedelta(seconds=step_seconds * i)).timestamp(): value for i in range(steps)})

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        self.asked.append(("instant", query))
        if error := self._error(query):
            return Series(error=error)
        assert at == SINCE
        return Series(values={at.timestamp(): 50.0 if "orders_total" in query else 1000.0})

    def labels(self, query: str) -> Labels:
        self.asked.append(("labels", query))
        return Labels(items=tuple({"alertname": a} for a in self.alerts), error=self._error(query))


def _spec(**analysis: object) -> GuardedRolloutSpec:
    return GuardedRolloutSpec.model_validate({
        "target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2"}]},
        "analysis": {"interval": "5s", "preRolloutWindow": "10m", "requests": "http_requests_total",
                     "orders": "orders_total", **analysis}})


def _status(**analysis: object) -> GuardedRolloutStatus:
    return GuardedRolloutStatus.model_validate({
        "stage": "Bake", "startedAt": stamp(SINCE), "analysis": {"since": stamp(SINCE), **analysis}})


def test_gather_asks_the_pre_rollout_service_once_then_canary_and_stable_per_interval() -> None:
    provider = FakeProvider()
    obs = gather(provider, _spec(), _status(), namespace="shop", now=NOW)
    canary, stable, service = (f'namespace="shop",pod=~"shop-{p}[a-z0-9]{{1,10}}-[a-z0-9]{{5}}"'
                               for p in ("canary-", "", "(canary-)?"))
    def exact(counter: str, selector: str, window: str, look_back: str = "30s", matchers: str = "") -> str:
        series = f"{counter}{{{selector}{matchers}}}"
        return (f"sum(clamp_min({series} - (last_over_time({series}[{look_back}] offset {window}) or "
                f"min_over_time({series}[{window}])), 0))")

    def orders(sel: str, window: str, lb: str = "30s") -> str:
        return exact("orders_total", sel, window, lb)

    def requests(sel: str, window: str, lb: str = "30s") -> str:
        return exact("http_requests_total", sel, window, lb)

    def errors(sel: str, window: str, lb: str = "30s") -> str:
        return exact("http_requests_total", sel, window, lb, ',code=~"5.."')

    def pre(counter: str, matchers: str = "") -> str:  # the pre-rollout window: minutes, asked with increase()
        return f"sum(increase({counter}{{{service}{matchers}}}[10m]))"
    assert provider.asked == [
        ("instant", pre("orders_total")), ("instant", pre("http_requests_total")),
        ("range", orders(canary, "5s")), ("range", requests(canary, "5s")),
        ("range", orders(stable, "5s")), ("range", requests(stable, "5s")),
        ("instant", pre("http_requests_total", ',code=~"5.."')), ("instant", pre("http_requests_total")),
        ("range", errors(canary, "5s")), ("range", requests(canary, "5s")),
        ("range", errors(stable, "5s")), ("range", requests(stable, "5s")),
    ]
    # Two whole 5 s intervals since the analysis began end before now minus the scrape lag.
    assert obs.metrics == {
        "order-rate": MetricData(canary=(Counts(5, 100),) * 2, stable=(Counts(5, 100),) * 2,
                                 pre_rollout=Counts(50, 1000)),
        "error-rate": MetricData(canary=(Counts(5, 100),) * 2, stable=(Counts(5, 100),) * 2,
                                 pre_rollout=Counts(1000, 1000)),
    }
    assert obs.alerts == () and obs.alerts_error is None


def test_gather_keeps_the_recorded_pre_rollout_counts_and_reports_a_failed_query_as_the_metrics_error() -> None:
    provider = FakeProvider(fail="code=~")
    recorded = [{"metric": "error-rate", "events": 3, "requests": 300}, {"metric": "order-rate", "events": 1,
                                                                           "requests": 20}]
    obs = gather(provider, _spec(), _status(preRollout=recorded), namespace="shop", now=NOW)
    assert [kind for kind, _ in provider.asked] == ["range"] * 5, "no instant query; errors stop at the first"
    assert obs.metrics["order-rate"].pre_rollout == Counts(1, 20)
    assert obs.metrics["error-rate"] == MetricData(error=f"refused {provider.asked[-1][1]}")


def test_gather_names_the_firing_alerts_that_carry_the_selectors_labels() -> None:
    provider = FakeProvider(alerts=("B", "A", "A"))
    spec = _spec(alerts={"matchLabels": {"team": 'sh"op', "app": "shop"}})
    obs = gather(provider, spec, _status(), namespace="shop", now=NOW)
    assert provider.asked[-1] == ("labels", 'ALERTS{alertstate="firing",app="shop",team="sh\\"op"}')
    assert obs.alerts == ("A", "B")


def test_gather_before_the_first_interval_ends_asks_only_for_the_baseline() -> None:
    provider = FakeProvider()
    # The first interval has ended, but its last scrape may not be in Prometheus yet.
    now = SINCE + timedelta(seconds=5 + SCRAPE_LAG_SECONDS - 0.5)
    obs = gather(provider, _spec(orders=None), _status(), namespace="shop", now=now)
    assert [kind for kind, _ in provider.asked] == ["instant", "instant"]
    assert obs.metrics == {"error-rate": MetricData(pre_rollout=Counts(1000, 1000))}


def test_the_false_rollback_budget_is_split_over_every_judge_of_every_metric() -> None:
    bounded = Metric(name="latency-errors", direction=Direction.LOWER_IS_BETTER, events="e", requests="r",
                     max_ratio=0.02, pre_rollout_tolerance=None)
    analysis = Analysis(requests="http_requests_total", orders="orders_total", metrics=[bounded],
                        false_rollback_rate=0.03)
    assert [judges_of(m) for m in effective_metrics(analysis)] == [2, 2, 2]
    config = judge_config(bounded, analysis)
    assert config.alpha == pytest.approx(0.03 / 6)
    assert (config.direction, config.max_ratio, config.pre_rollout_tolerance, config.min_requests) == (
        Direction.LOWER_IS_BETTER, 0.02, None, 100.0)


def test_a_metric_named_like_a_shortcut_guard_takes_its_place() -> None:
    mine = Metric(name="error-rate", direction=Direction.LOWER_IS_BETTER, events="e", requests="r")
    metrics = effective_metrics(Analysis(requests="http_requests_total", orders="orders_total", metrics=[mine]))
    assert [m.name for m in metrics] == ["error-rate", "order-rate"] and metrics[0] is mine
    assert effective_metrics(Analysis(metrics=[mine])) == [mine], "no requests counter, no guards"
