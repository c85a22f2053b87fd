"""A close look: a rollout whose evidence is within reach of a Fail is judged every CLOSE_LOOK_SECONDS on the
interval under way as well, read for itself, so a collapse is rolled back a scrape after the evidence crosses
rather than when the grid's interval ends; a rollout far from it keeps the grid's rhythm and shared reads."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from guarded.api.analysis import AnalysisRecord, EvidenceRecord, JudgementRecord
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.api.stages import Stage
from guarded.core.analysis import (
    CLOSE_LOOK_SECONDS,
    SCRAPE_LAG_SECONDS,
    analysis_due,
    close_to_fail,
    next_judgement_in,
)
from guarded.core.clock import stamp
from guarded.core.judging import pressing
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


def status(log_lr: float | None, judged: float = 6.2, *, wave: int = 1, pre: float = -3.0) -> GuardedRolloutStatus:
    """Baking wave 1 since SINCE, last judged `judged` s later with the order-rate judge's `log_lr`."""
    base = GuardedRolloutStatus.model_validate({"stage": "Bake", "wave": 1, "startedAt": stamp(SINCE),
                                                "analysis": {"since": stamp(SINCE), "lastAt": stamp(at(judged))}})
    if log_lr is None:
        return base
    evidence = [EvidenceRecord(judge="Stable", verdict="Inconclusive", log_lr=log_lr, log_threshold=THRESHOLD),
                EvidenceRecord(judge="PreRollout", verdict="Inconclusive", log_lr=pre, log_threshold=THRESHOLD)]
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


def test_a_rollout_looked_at_closely_or_restoring_its_stable_presses_for_a_worker_and_the_others_do_not() -> None:
    def judged_twice(st: GuardedRolloutStatus) -> GuardedRolloutStatus:
        return st.model_copy(update={"analysis": st.analysis.model_copy(update={
            "recent": [*st.analysis.recent, *st.analysis.recent]})})

    assert pressing(spec(), judged_twice(status(5.5))), "within reach of a Fail: its next look may roll back"
    assert not pressing(spec(), judged_twice(status(3.0))) and not pressing(spec(), judged_twice(status(-4.0)))
    # A wave's first two judgements press (a bad canary is first seen by its first evidence), then only a
    # close look does: a wave judged on no data (every log LR 0) does not press for as long as that lasts.
    assert pressing(spec(), status(None)) and pressing(spec(), status(-4.0, wave=0))
    assert pressing(spec(), status(0.0, pre=0.0)), "one judgement of this wave so far"
    assert not pressing(spec(), judged_twice(status(0.0, pre=0.0)))
    rolling_back = status(-4.0).model_copy(update={"stage": Stage.ROLLING_BACK})
    assert pressing(spec(), rolling_back), "restoring the stable"
    # Evidence near a Fail from a wave no longer judged (promoting) does not press.
    promoting = status(5.5).model_copy(update={"stage": Stage.PROMOTE})
    assert not pressing(spec(), promoting) and not pressing(spec(), status(None).model_copy(
        update={"stage": Stage.SCALE_CANARY}))
    no_analysis = GuardedRolloutSpec.model_validate({"target": {"name": "shop"},
                                                     "change": {"containers": [{"name": "app", "image": "shop:2"}]}})
    assert not pressing(no_analysis, status(5.5))


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
    """A canary pod and two stable pods, each serving 10 requests and taking 1 order a second. The grid's
    shared range queries see whole intervals; an instant query over a window (`[<ms>ms]`) ending at `at` sees
    what each pod served in it, the canary only up to its last scrape (`canary_scraped`)."""

    def __init__(self, canary_scraped: float) -> None:
        self.canary_scraped = canary_scraped
        self.asked: list[tuple[str, float, float]] = []
        self.instants: list[tuple[str, float]] = []

    @staticmethod
    def rate(query: str) -> float:
        return 1.0 if "orders_total" in query else 10.0

    def range_by(self, query: str, label: str | tuple[str, ...], *, start: datetime, end: datetime,
                 step_seconds: float) -> Grouped:
        self.asked.append((query, start.timestamp(), end.timestamp()))
        n = round((end - start).total_seconds() / step_seconds) + 1
        steps = [start.timestamp() + step_seconds * i for i in range(n)]
        assert label == ("namespace", "pod"), "whole intervals come from the grid's shared queries"
        return Grouped(series={f"shop\x00{p}": {t: self.rate(query) * step_seconds for t in steps} for p in PODS})

    def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
        if label != "pod":
            return Grouped()   # the pre-rollout window's shared query: asked again apart (instant)
        assert at is not None and query.startswith("sum by (pod) (")
        self.instants.append((query, at.timestamp()))
        window = re.search(r"\[(\d+)ms\]", query)
        assert window is not None
        start = at.timestamp() - int(window[1]) / 1000

        def served(pod: str) -> float:
            until = min(at.timestamp(), self.canary_scraped) if "-canary-" in pod else at.timestamp()
            return self.rate(query) * max(0.0, until - start)

        return Grouped(series={p: {at.timestamp(): served(p)} for p in PODS})

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        raise AssertionError("the built-in guards are read per pod")

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        return Series(values={0.0: 1000.0})

    def labels(self, query: str) -> Labels:
        return Labels()


PODS = [CANARY, "shop-7d9f8c6b5-abcde", "shop-7d9f8c6b5-fghij"]


def look(shop: Shop, st: GuardedRolloutStatus, now: float, shared: SharedQueries,
         memory: SeenIntervals | None = None) -> dict[str, list[tuple[float, float]]]:
    obs = gather(shop, spec(), st, namespace="shop", now=at(now), memory=memory or SeenIntervals(),
                 rollout=("shop", "release", "uid"), shared=shared)
    return {name: [(round(c.requests, 3), round(s.requests, 3)) if c and s else (-1, -1)
                   for c, s in zip(m.canary, m.stable, strict=True)] for name, m in obs.metrics.items()}


def test_a_close_look_reads_the_interval_under_way_at_one_ingested_moment_apart_from_the_grid() -> None:
    # 7.3 s into the wave: intervals ending at 2, 4 and 6 s are whole; the one ending at 8 s is under way.
    # Its counts are cut at 7.1 s (the scrape lag before the look): the canary's up to its scrape at 7.0 s.
    shop, memory = Shop(canary_scraped=at(7.0).timestamp()), SeenIntervals()
    shared = SharedQueries(shop)
    counts = look(shop, status(5.5), 7.3, shared, memory)
    assert counts["order-rate"] == [(20.0, 40.0)] * 3 + [(10.0, 22.0)]
    assert counts["error-rate"] == counts["order-rate"]
    # Orders, errors and the requests they share: one instant query each, all at the same moment.
    assert len(shop.instants) == 3 and {t for _, t in shop.instants} == {at(7.1).timestamp()}
    assert all(q.startswith("sum by (namespace, pod) (") and end <= at(6).timestamp() for q, _, end in shop.asked)
    # The grid is untouched: the next step reads the interval ending at 8 s whole, from the same shared queries.
    shop.instants.clear()
    assert look(shop, status(-1.0), 8.3, shared, memory)["order-rate"] == [(20.0, 40.0)] * 4
    assert shop.instants == [], "far from a Fail: the grid's intervals only"


def test_a_close_look_before_the_canary_s_first_scrape_in_the_interval_judges_what_the_grid_read() -> None:
    shop = Shop(canary_scraped=at(5.9).timestamp())
    assert look(shop, status(5.5), 6.4, SharedQueries(shop))["order-rate"] == [(20.0, 40.0)] * 3
    # Too soon after the grid's step to read anything new: no query at all.
    shop.instants.clear()
    assert look(shop, status(5.5), 6.25, SharedQueries(shop))["order-rate"] == [(20.0, 40.0)] * 3
    assert shop.instants == []
