"""A close look: a rollout whose evidence is within reach of a Fail is judged every CLOSE_LOOK_SECONDS on the
interval under way as well, read for itself, so a collapse is rolled back a scrape after the evidence crosses
rather than when the grid's interval ends; a rollout far from it keeps the grid's rhythm and shared reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from guarded.api.analysis import AnalysisRecord, EvidenceRecord, JudgementRecord
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis import (
    CLOSE_LOOK_SECONDS,
    SCRAPE_LAG_SECONDS,
    analysis_due,
    close_to_fail,
    next_judgement_in,
)
from guarded.core.clock import stamp
from guarded.metrics.gather import SeenIntervals, gather
from guarded.metrics.provider import Grouped, Labels, Series
from guarded.metrics.shared import SharedQueries

SINCE = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
THRESHOLD = 8.29   # ln(4000)
CANARY = "shop-canary-7d9f8c6b5-x2x4z"


def at(seconds: float) -> datetime:
    return SINCE + timedelta(seconds=seconds)


def spec(interval: str = "2s") -> GuardedRolloutSpec:
    return GuardedRolloutSpec.model_validate({
        "target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2"}]},
        "analysis": {"interval": interval, "requests": "http_requests_total", "orders": "orders_total"}})


def status(log_lr: float | None, judged: float = 6.2, *, wave: int = 1) -> GuardedRolloutStatus:
    """Baking wave 1 since SINCE, last judged `judged` s later with the order-rate judge's `log_lr`."""
    base = GuardedRolloutStatus.model_validate({"stage": "Bake", "wave": 1, "startedAt": stamp(SINCE),
                                                "analysis": {"since": stamp(SINCE), "lastAt": stamp(at(judged))}})
    if log_lr is None:
        return base
    evidence = [EvidenceRecord(judge="Stable", verdict="Inconclusive", log_lr=log_lr, log_threshold=THRESHOLD),
                EvidenceRecord(judge="PreRollout", verdict="Inconclusive", log_lr=-3.0, log_threshold=THRESHOLD)]
    rec = AnalysisRecord(time=stamp(at(judged)), wave=wave, verdict="Inconclusive", judgements=[
        JudgementRecord(metric="order-rate", verdict="Inconclusive", evidence=evidence)])
    return base.model_copy(update={"analysis": base.analysis.model_copy(update={"recent": [rec]})})


def test_a_judge_whose_pace_would_cross_within_two_intervals_is_looked_at_closely() -> None:
    # 6.2 s into the wave's analysis: 5.5 nats is a pace of 0.89 a second, 3.5 more in two 2 s intervals.
    assert close_to_fail(status(5.5), 2.0)
    # 3.0 nats at that time: 1.9 more in two intervals, short of 8.29.
    assert not close_to_fail(status(3.0), 2.0)
    # A healthy canary's evidence below zero, no judgement yet, another wave's record, an interval off the grid.
    assert not close_to_fail(status(-4.0), 2.0)
    assert not close_to_fail(status(None), 2.0)
    assert not close_to_fail(status(5.5, wave=0), 2.0)
    assert not close_to_fail(status(5.5), 1.5)
    # A wave's first read, 1.2 s in: its pace is taken over two intervals (4 s), not 1.2 s. 3.0 nats then
    # reach 6.0 in two more, not 13.
    assert not close_to_fail(status(3.0, 1.2), 2.0)
    assert close_to_fail(status(4.2, 1.2), 2.0)


def test_looking_closely_a_judgement_is_due_every_close_look_between_the_grid_s_steps() -> None:
    judged = 6 + SCRAPE_LAG_SECONDS   # the interval ending at 6 s read
    close, far = status(5.5, judged), status(-1.0, judged)
    assert not analysis_due(spec(), close, at(judged + CLOSE_LOOK_SECONDS - 0.05))
    assert analysis_due(spec(), close, at(judged + CLOSE_LOOK_SECONDS))
    assert not analysis_due(spec(), far, at(judged + 1.5)), "far from a Fail: only when the next interval is readable"
    assert analysis_due(spec(), far, at(8 + SCRAPE_LAG_SECONDS))
    now = at(judged)
    assert abs(next_judgement_in(stamp(now), now, 2.0, close=True) - CLOSE_LOOK_SECONDS) < 1e-6
    assert abs(next_judgement_in(stamp(now), now, 2.0) - 2.0) < 1e-6
    # The grid's next step comes first when it is nearer than a close look.
    late = at(8 + SCRAPE_LAG_SECONDS - 0.1)
    assert abs(next_judgement_in(stamp(late), late, 2.0, close=True) - 0.1) < 1e-6


class Shop:
    """A canary pod and two stable pods, each serving 10 requests and taking 1 order a second, whose counts at
    a step are what they served up to `now` (a step after it: up to now, as Prometheus answers at a time to
    come); `scraped`: the last time the canary pod was scraped, after which it served nothing yet."""

    def __init__(self, now: float, canary_scraped: float) -> None:
        self.now, self.canary_scraped = now, canary_scraped
        self.asked: list[tuple[str, float, float]] = []

    def range_by(self, query: str, label: str | tuple[str, ...], *, start: datetime, end: datetime,
                 step_seconds: float) -> Grouped:
        self.asked.append((query, start.timestamp(), end.timestamp()))
        n = round((end - start).total_seconds() / step_seconds) + 1
        steps = [start.timestamp() + step_seconds * i for i in range(n)]
        rate = 1.0 if "orders_total" in query else 10.0

        def served(pod: str, t: float) -> float:
            seen_until = min(t, self.canary_scraped if "-canary-" in pod else self.now)
            return rate * max(0.0, seen_until - max(t - step_seconds, SINCE.timestamp()))

        pods = [CANARY, "shop-7d9f8c6b5-abcde", "shop-7d9f8c6b5-fghij"]
        if label == "pod":
            return Grouped(series={p: {t: served(p, t) for t in steps} for p in pods})
        return Grouped(series={f"shop\x00{p}": {t: served(p, t) for t in steps} for p in pods})

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        raise AssertionError("the built-in guards are read per pod")

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        return Series(values={0.0: 1000.0})

    def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
        return Grouped()

    def labels(self, query: str) -> Labels:
        return Labels()


def look(shop: Shop, st: GuardedRolloutStatus, now: float, shared: SharedQueries) -> dict[str, list[float]]:
    obs = gather(shop, spec(), st, namespace="shop", now=at(now), memory=SeenIntervals(),
                 rollout=("shop", "release", "uid"), shared=shared)
    return {name: [round(c.requests, 3) if c else -1 for c in m.canary] for name, m in obs.metrics.items()}


def test_a_close_look_reads_the_interval_under_way_for_itself_and_only_once_the_canary_served_in_it() -> None:
    # 7.3 s into the wave: intervals ending at 2, 4 and 6 s are read; the one ending at 8 s is under way.
    shop = Shop(now=at(7.3).timestamp(), canary_scraped=at(7.0).timestamp())
    shared = SharedQueries(shop)
    counts = look(shop, status(5.5), 7.3, shared)
    assert counts["order-rate"] == [20.0, 20.0, 20.0, 10.0], "the canary's second of the interval under way"
    opened = [(q, end) for q, _, end in shop.asked if end == at(8).timestamp()]
    assert opened and all(q.startswith("sum by (pod) (") for q, _ in opened), "read for itself, not in the grid"
    # Far from a Fail, the same moment reads the grid's intervals only, from the shared queries.
    shop.asked.clear()
    assert look(shop, status(-1.0), 7.3, SharedQueries(shop))["order-rate"] == [20.0, 20.0, 20.0]
    assert all(q.startswith("sum by (namespace, pod) (") and end <= at(6).timestamp() for q, _, end in shop.asked)
    # No scrape of the canary yet in the interval under way: it is left out, as if the look were the grid's.
    shop = Shop(now=at(6.4).timestamp(), canary_scraped=at(5.9).timestamp())
    assert look(shop, status(5.5), 6.4, SharedQueries(shop))["order-rate"] == [20.0, 20.0, 19.0]
