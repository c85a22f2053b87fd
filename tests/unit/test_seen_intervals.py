"""Incremental analysis reads: with a memory of the intervals already read, each step asks Prometheus only
for what it has not seen, and judges exactly what a step reading the whole wave would have judged."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from guarded.api.analysis import Analysis
from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis.selection import effective_metrics
from guarded.core.clock import stamp
from guarded.metrics.gather import SeenIntervals, gather
from guarded.metrics.provider import Grouped, Labels, Series
from guarded.metrics.queries import pod_split

SINCE = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROLLOUT = ("shop", "release", "uid-1")


class Changing:
    """Counts that differ per interval (so a misplaced interval shows); `gaps`: timestamps with no sample;
    `down`: every query fails."""

    def __init__(self, gaps: frozenset[float] = frozenset()) -> None:
        self.asked: list[tuple[str, datetime, datetime]] = []
        self.gaps, self.down = gaps, False

    def _values(self, query: str, start: datetime, end: datetime, step_seconds: float,
                canary: bool) -> dict[float, float]:
        n = int((end - start).total_seconds() // step_seconds) + 1
        ts = [(start + timedelta(seconds=step_seconds * i)).timestamp() for i in range(n)]
        base = 5.0 if "orders_total" in query or "code=~" in query else 100.0
        return {t: base + (t % 97) + (7.0 if canary else 0.0) for t in ts if t not in self.gaps}

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        self.asked.append((query, start, end))
        if self.down:
            return Series(error="Prometheus unreachable")
        if end <= start:
            return Series()
        return Series(values=self._values(query, start, end, step_seconds, 'pod=~"shop-canary-' in query))

    def range_by(self, query: str, label: str, *, start: datetime, end: datetime, step_seconds: float) -> Grouped:
        """The same counts per pod: the canary's pod, and the stable's split over two pods."""
        self.asked.append((query, start, end))
        assert label == "pod" and query.startswith("sum by (pod) (") and "(canary-)?" in query
        if self.down:
            return Grouped(error="Prometheus unreachable")
        if end <= start:
            return Grouped()
        stable = self._values(query, start, end, step_seconds, False)
        return Grouped(series={"shop-canary-7d9f8c6b5-x2x4z": self._values(query, start, end, step_seconds, True),
                               "shop-7d9f8c6b5-abcde": {t: v / 2 for t, v in stable.items()},
                               "shop-7d9f8c6b5-fghij": {t: v / 2 for t, v in stable.items()},
                               "other-7d9f8c6b5-fghij": {t: 1e6 for t in stable}})

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        return Series(values={0.0: 1000.0})

    def labels(self, query: str) -> Labels:
        return Labels()


def spec() -> GuardedRolloutSpec:
    return GuardedRolloutSpec.model_validate({
        "target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2"}]},
        "analysis": {"interval": "5s", "requests": "http_requests_total", "orders": "orders_total"}})


def status(since: datetime = SINCE) -> GuardedRolloutStatus:
    return GuardedRolloutStatus.model_validate({"stage": "Bake", "startedAt": stamp(since),
                                                "analysis": {"since": stamp(since)}})


def steps_of(seconds: float) -> datetime:
    return SINCE + timedelta(seconds=seconds)


def test_each_step_reads_only_new_intervals_and_judges_what_a_whole_read_would() -> None:
    memory, incremental, whole = SeenIntervals(), Changing(), Changing()
    for at in range(13, 200, 5):
        now = steps_of(at + 0.5)
        seen = gather(incremental, spec(), status(), namespace="shop", now=now, memory=memory, rollout=ROLLOUT)
        assert seen == gather(whole, spec(), status(), namespace="shop", now=now)
    # The last step (at 198.5 s) read from 165 s on (what the step before it had not yet kept), not from 5 s.
    assert [start for _, start, _ in incremental.asked[-3:]] == [steps_of(165)] * 3
    assert {start for _, start, _ in whole.asked[-8:]} == {steps_of(5)}
    # Per pod, canary and stable in one query: orders, errors and requests (the two guards share it), once each.
    assert len(incremental.asked) == 3 * 38 and len(whole.asked) == 8 * 38


def test_a_restarted_operator_rebuilds_the_counts_from_prometheus() -> None:
    memory, provider = SeenIntervals(), Changing()
    first = gather(provider, spec(), status(), namespace="shop", now=steps_of(120.5), memory=memory, rollout=ROLLOUT)
    again = gather(provider, spec(), status(), namespace="shop", now=steps_of(120.5), memory=SeenIntervals(),
                   rollout=ROLLOUT)
    assert first == again
    assert provider.asked[-1][1] == steps_of(5), "an empty memory reads the wave from its first interval"


def test_a_failed_read_keeps_nothing_and_holds_as_before() -> None:
    memory, provider = SeenIntervals(), Changing()
    provider.down = True
    down = gather(provider, spec(), status(), namespace="shop", now=steps_of(60.5), memory=memory, rollout=ROLLOUT)
    assert all(m.error for m in down.metrics.values())
    provider.down = False
    up = gather(provider, spec(), status(), namespace="shop", now=steps_of(60.5), memory=memory, rollout=ROLLOUT)
    assert up == gather(Changing(), spec(), status(), namespace="shop", now=steps_of(60.5))


def test_an_interval_without_data_stays_without_data() -> None:
    gap = steps_of(10).timestamp()
    memory, provider = SeenIntervals(), Changing(gaps=frozenset({gap}))
    for at in (60.5, 65.5, 70.5):
        seen = gather(provider, spec(), status(), namespace="shop", now=steps_of(at), memory=memory, rollout=ROLLOUT)
        assert seen.metrics["order-rate"].canary[1] is None
        assert seen == gather(Changing(gaps=frozenset({gap})), spec(), status(), namespace="shop", now=steps_of(at))


def test_kept_counts_come_back_as_kept_a_missing_one_included() -> None:
    memory = SeenIntervals()
    kept = {1764237000.0: 12.5, 1764237005.0: math.nan, 1764237010.125: 0.0}
    memory.keep(ROLLOUT, "uid@since", "q", kept)
    back = memory.values(ROLLOUT, "uid@since", "q")
    assert list(back) == list(kept) and back[1764237000.0] == 12.5 and math.isnan(back[1764237005.0])
    assert back[1764237010.125] == 0.0
    assert memory.values(ROLLOUT, "uid@other", "q") == {} and memory.values(ROLLOUT, "uid@since", "p") == {}


def test_a_new_wave_starts_a_new_memory_and_forget_drops_the_rollout() -> None:
    memory, provider = SeenIntervals(), Changing()
    gather(provider, spec(), status(), namespace="shop", now=steps_of(100.5), memory=memory, rollout=ROLLOUT)
    later = SINCE + timedelta(seconds=100)
    seen = gather(provider, spec(), status(later), namespace="shop", now=later + timedelta(seconds=60.5),
                  memory=memory, rollout=ROLLOUT)
    assert seen == gather(Changing(), spec(), status(later), namespace="shop", now=later + timedelta(seconds=60.5))
    assert len(memory) == 1
    memory.forget(("shop", "release"))
    assert len(memory) == 0


def test_only_the_built_in_summed_increases_are_asked_per_pod() -> None:
    analysis = Analysis(requests="http_requests_total", orders="orders_total",
                        latency={"histogram": "h", "threshold": "250ms"})  # type: ignore[arg-type]
    split = {m.name: [pod_split(t, namespace="n", target="sh.op", interval="5s", le="0\\.25")
                      for t in (m.events, m.requests)] for m in effective_metrics(analysis)}
    orders, requests = split["order-rate"]
    assert orders is not None and requests is not None
    series = 'orders_total{namespace="n",pod=~"sh\\\\.op-(canary-)?[a-z0-9]{1,10}-[a-z0-9]{5}"}'
    canary = series[:-1] + ',pod=~".+-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"}'   # first values: canary pods' only
    assert orders.query == (f"sum by (pod) (clamp_min({series} - (last_over_time({series}[30s] offset 5s) or "
                            f"min_over_time({series}[5s])), 0)) or label_replace(sum by (pod) ("
                            f"min_over_time({canary}[5s]) unless last_over_time({canary}[30s] offset 5s)), "
                            '"pod", "$1/first", "pod", "(.+)")')
    errors = split["error-rate"][0]
    assert errors is not None and errors.query.endswith(
        ',code=~"5..",pod=~".+-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"}[30s] offset 5s)), "pod", "$1/first", "pod", "(.+)")')
    assert split["slow-request-rate"] == [None, None], "a composite template is asked as written"
    # The form documented before the first interval of a new series counted (without `or min_over_time`),
    # copied into a spec's own metric, is still asked per pod, as written.
    before = "sum(clamp_min(x{{{selector}}} - last_over_time(x{{{selector}}}[{{lookback}}] offset {{interval}}), 0))"
    split_before = pod_split(before, namespace="n", target="shop", interval="5s")
    x = 'x{namespace="n",pod=~"shop-(canary-)?[a-z0-9]{1,10}-[a-z0-9]{5}"}'
    c = x[:-1] + ',pod=~".+-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"}'
    assert split_before is not None and split_before.query == (
        f'sum by (pod) (clamp_min({x} - last_over_time({x}[30s] offset 5s), 0)) or label_replace(sum by (pod) '
        f'(min_over_time({c}[5s]) unless last_over_time({c}[30s] offset 5s)), "pod", "$1/first", "pod", "(.+)")')
    # A selector ending in a comma (valid PromQL) gets the canary matcher without an empty one.
    comma = "sum(clamp_min(x{{{selector}},} - (last_over_time(x{{{selector}},}[{{lookback}}] offset {{interval}}) or " \
        "min_over_time(x{{{selector}},}[{{interval}}])), 0))"
    split_comma = pod_split(comma, namespace="n", target="shop", interval="5s")
    assert split_comma is not None and ",," not in split_comma.query and ',pod=~".+-canary-' in split_comma.query
    assert re.fullmatch(orders.canary, "sh.op-canary-7d9f8c6b5-x2x4z")
    assert not re.fullmatch(orders.stable, "sh.op-canary-7d9f8c6b5-x2x4z")
    assert re.fullmatch(orders.stable, "sh.op-7d9f8c6b5-x2x4z") and not re.fullmatch(orders.stable, "shXop-7d9f8-x2x4z")


CANARY_POD, STABLE_POD = "shop-canary-7d9f8c6b5-x2x4z", "shop-7d9f8c6b5-abcde"


class NewPods(Changing):
    """Changing's counts, and in the interval ending at 15 s the first values of a canary pod's and a stable
    pod's new series (what they served before their first scrape), as the per-pod query's `/first` rows."""

    def range_by(self, query: str, label: str, *, start: datetime, end: datetime, step_seconds: float) -> Grouped:
        grouped = super().range_by(query, label, start=start, end=end, step_seconds=step_seconds)
        at = steps_of(15).timestamp()
        if start.timestamp() <= at <= end.timestamp():
            grouped.series[CANARY_POD + "/first"] = {at: 40.0}
            grouped.series[STABLE_POD + "/first"] = {at: 3.0}
            grouped.series["other-7d9f8c6b5-fghij/first"] = {at: 1e6}
        return grouped


def test_a_new_pod_counts_from_zero_only_when_its_creation_is_within_the_lookback() -> None:
    def counts(born: dict[str, float]) -> dict[str, float]:
        seen = gather(NewPods(), spec(), status(), namespace="shop", now=steps_of(40.5), memory=SeenIntervals(),
                      rollout=ROLLOUT, born=born)
        data = seen.metrics["order-rate"]
        return {"canary": data.canary[2].requests, "stable": data.stable[2].requests,  # type: ignore[union-attr]
                "canary_later": data.canary[3].requests}  # type: ignore[union-attr]

    plain = counts({})
    # Made 2 s before the interval (10-15 s) began: the lookback (30 s) before it reaches back to its creation,
    # so its series had no sample before this one: counted from zero. Each pod's own first value, nobody else's.
    young = counts({CANARY_POD: steps_of(8).timestamp(), STABLE_POD: steps_of(9).timestamp(),
                    "other-7d9f8c6b5-fghij": steps_of(9).timestamp()})
    assert young == {**plain, "canary": plain["canary"] + 40.0, "stable": plain["stable"] + 3.0}
    # Made 40 s before it: a series first seen now may be one Prometheus lost sight of (counted before), and a
    # pod the operator does not see is not known to be new: neither is counted from zero.
    assert counts({CANARY_POD: steps_of(-30).timestamp(), STABLE_POD: steps_of(-30).timestamp()}) == plain
