"""Queries shared by every rollout (metrics/shared): one range query per built-in template and new step for
all rollouts, split by namespace and pod in the operator, judging exactly what each rollout's own queries
would have."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.clock import stamp
from guarded.metrics.gather import SeenIntervals, gather
from guarded.metrics.provider import Grouped, Labels, Series
from guarded.metrics.shared import SharedQueries

SINCE = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
POD_HASH = "7d9f8c6b5"


class Shop:
    """Per namespace, a canary pod and two stable pods (and a pod of another app) whose counts differ per
    interval and per namespace, so that a count taken from the wrong step or namespace shows."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, datetime, datetime]] = []
        self.down = False
        self.firing: tuple[dict[str, str], ...] = ()
        self.label_queries: list[str] = []
        self.instants: list[str] = []

    @staticmethod
    def value(namespace: str, pod: str, query: str, t: float) -> float:
        base = 5.0 if "orders_total" in query or "code=~" in query else 100.0
        return base + (t % 97) + 3.0 * (int(namespace[-1]) if namespace[-1].isdigit() else 0) + \
            (7.0 if "-canary-" in pod else 0.0) + (1e6 if pod.startswith("other") else 0.0)

    def pods(self, namespace: str) -> list[str]:
        return [f"shop-canary-{POD_HASH}-x2x4z", f"shop-{POD_HASH}-abcde", f"shop-{POD_HASH}-fghij",
                f"other-{POD_HASH}-fghij"]

    def _times(self, start: datetime, end: datetime, step_seconds: float) -> list[float]:
        n = int((end - start).total_seconds() // step_seconds) + 1
        return [(start + timedelta(seconds=step_seconds * i)).timestamp() for i in range(n)]

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        """A whole-selector query (what a rollout asks without memory): the sum over its pods."""
        self.asked.append((query, start, end))
        if end <= start:
            return Series()
        selector = re.search(r'namespace="([^"]+)",pod=~"([^"]+)"', query)
        assert selector is not None
        pods = [p for p in self.pods(selector[1]) if re.fullmatch(selector[2].replace("\\\\", "\\"), p)]
        return Series(values={t: sum(self.value(selector[1], p, query, t) for p in pods)
                              for t in self._times(start, end, step_seconds)})

    def range_by(self, query: str, label: str | tuple[str, ...], *, start: datetime, end: datetime,
                 step_seconds: float) -> Grouped:
        self.asked.append((query, start, end))
        if self.down:
            return Grouped(error="Prometheus unreachable")
        if end <= start:
            return Grouped()
        ts = self._times(start, end, step_seconds)
        if label == "pod":
            namespace = re.search(r'namespace="([^"]+)"', query)
            assert namespace is not None
            return Grouped(series={pod: {t: self.value(namespace[1], pod, query, t) for t in ts}
                                   for pod in self.pods(namespace[1])})
        assert label == ("namespace", "pod") and query.startswith("sum by (namespace, pod) (")
        matcher = re.search(r'namespace=~"([^"]+)"', query)
        assert matcher is not None
        namespaces = matcher[1].split("|")
        return Grouped(series={f"{ns}\x00{pod}": {t: self.value(ns, pod, query, t) for t in ts}
                               for ns in namespaces for pod in self.pods(ns)})

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        """The pre-rollout window's count of the service's pods (a whole-selector query)."""
        assert at is not None
        self.instants.append(query)
        selector = re.search(r'namespace="([^"]+)",pod=~"([^"]+)"', query)
        assert selector is not None and "increase(" in query
        pods = [p for p in self.pods(selector[1]) if re.fullmatch(selector[2].replace("\\\\", "\\"), p)]
        return Series(values={at.timestamp(): sum(100 * self.value(selector[1], p, query, at.timestamp())
                                                  for p in pods)})

    def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
        assert at is not None and label == ("namespace", "pod") and "increase(" in query
        self.instants.append(query)
        if self.down:
            return Grouped(error="Prometheus unreachable")
        matcher = re.search(r'namespace=~"([^"]+)"', query)
        assert matcher is not None
        return Grouped(series={f"{ns}\x00{pod}": {at.timestamp(): 100 * self.value(ns, pod, query, at.timestamp())}
                               for ns in matcher[1].split("|") for pod in self.pods(ns)})

    def labels(self, query: str) -> Labels:
        self.label_queries.append(query)
        if self.down:
            return Labels(error="Prometheus unreachable")
        return Labels(items=self.firing)


def spec(alerts: dict[str, str] | None = None, interval: str = "5s") -> GuardedRolloutSpec:
    analysis: dict = {"interval": interval, "requests": "http_requests_total", "orders": "orders_total"}
    if alerts is not None:
        analysis["alerts"] = {"matchLabels": alerts}
    return GuardedRolloutSpec.model_validate({
        "target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2"}]},
        "analysis": analysis})


def status(since: datetime = SINCE) -> GuardedRolloutStatus:
    return GuardedRolloutStatus.model_validate({"stage": "Bake", "startedAt": stamp(since),
                                                "analysis": {"since": stamp(since)}})


def at(seconds: float) -> datetime:
    return SINCE + timedelta(seconds=seconds)


NAMESPACES = [f"team-{i}" for i in range(6)]


def first_then_the_rest(ask: Callable[[str], None], held: Callable[[], bool], queued: Callable[[], int],
                        release: threading.Event) -> None:
    """The first namespace asks and its query is held; every other namespace then asks, and once all of them
    wait in the queue the held query is let go."""
    threads = [threading.Thread(target=ask, args=(ns,)) for ns in NAMESPACES]
    threads[0].start()
    while not held():
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
    deadline = time.time() + 10
    while queued() < len(NAMESPACES) - 1 and time.time() < deadline:
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(10)


def test_many_rollouts_share_one_query_per_template_and_step_and_judge_what_their_own_would() -> None:
    shop, memory = Shop(), SeenIntervals()
    shared = SharedQueries(shop)
    for step in range(3, 40):
        for i, ns in enumerate(NAMESPACES):
            now = at(step * 5 + 2.5 + 0.1 * i)   # each rollout a little after the other
            seen = gather(shop, spec(), status(), namespace=ns, now=now, memory=memory,
                          rollout=(ns, "release", f"uid-{ns}"), shared=shared)
            assert seen == gather(Shop(), spec(), status(), namespace=ns, now=now)
    shared_asks = [q for q, _, _ in shop.asked if q.startswith("sum by (namespace, pod)")]
    # Orders, errors and requests: one query each per step for all six rollouts, never one per rollout; only
    # at the first step, asked one after the other, each rollout's namespace joined with a query of its own.
    assert len(shop.asked) == len(shared_asks) == 3 * (37 + 5)
    assert all(q.count("|") == 5 * 5 for q in shared_asks[3 * 6:]), "every namespace in one query (its 5 selectors)"


def test_an_interval_that_does_not_divide_the_settling_time_is_shared_too() -> None:
    """20 s: the steps a late scrape may still change (30 s) are not a whole number of intervals; the shared
    query still starts on the grid, so it serves every rollout."""
    shop, memory = Shop(), SeenIntervals()
    shared = SharedQueries(shop)
    for step in range(2, 12):
        for i, ns in enumerate(NAMESPACES):
            now = at(step * 20 + 2.5 + 0.1 * i)
            seen = gather(shop, spec(interval="20s"), status(), namespace=ns, now=now, memory=memory,
                          rollout=(ns, "release", f"uid-{ns}"), shared=shared)
            assert seen == gather(Shop(), spec(interval="20s"), status(), namespace=ns, now=now)
    own = [q for q, _, _ in shop.asked if q.startswith("sum by (pod)")]
    assert own == [], "no rollout read for itself"


def test_a_rollout_two_minutes_behind_is_served_by_the_grid_with_no_query_of_its_own() -> None:
    """At N = 1,000 a reconcile waited up to 88 s for a worker: its rollout then asks from the first interval
    it has not judged final, two minutes back. The grid keeps that long for the namespaces that share it."""
    shop, memory = Shop(), SeenIntervals()
    shared = SharedQueries(shop, hint=lambda _: set(NAMESPACES))
    ahead, behind = NAMESPACES[1:], NAMESPACES[0]
    gather(shop, spec(), status(), namespace=behind, now=at(20.5), memory=memory,
           rollout=(behind, "release", "uid-0"), shared=shared)
    for step in range(5, 30):   # the others are judged every interval; team-0 not once in 120 s
        for ns in ahead:
            gather(shop, spec(), status(), namespace=ns, now=at(step * 5 + 2.5), memory=memory,
                   rollout=(ns, "release", f"uid-{ns}"), shared=shared)
    before = len(shop.asked)
    late = gather(shop, spec(), status(), namespace=behind, now=at(147.6), memory=memory,
                  rollout=(behind, "release", "uid-0"), shared=shared)
    assert late == gather(Shop(), spec(), status(), namespace=behind, now=at(147.6))
    assert len(shop.asked) == before, "served from the steps the shared queries fetched meanwhile"
    # Each fetch re-read only what a late scrape may still change (30 s) and the step before, for everyone.
    assert {(end - start).total_seconds() for _, start, end in shop.asked[3:]} == {35.0}


def test_the_grid_keeps_each_namespace_s_steps_in_order_and_serves_only_runs_it_fetched() -> None:
    from guarded.metrics.shared import _Rows
    rows = _Rows()
    rows.merge({10.0: {"a": 1.0}, 15.0: {"a": 2.0, "b": 5.0}, 20.0: {}})
    assert rows.serve([10.0, 15.0, 20.0]) == {10.0: {"a": 1.0}, 15.0: {"a": 2.0, "b": 5.0}, 20.0: {}}
    rows.merge({20.0: {"a": 3.0}, 25.0: {"c": 9.0}})   # a re-read of the newest step replaces it
    assert rows.serve([15.0, 20.0, 25.0]) == {15.0: {"a": 2.0, "b": 5.0}, 20.0: {"a": 3.0}, 25.0: {"c": 9.0}}
    assert rows.serve([25.0, 30.0]) is None, "a step not fetched"
    rows.merge({40.0: {"a": 4.0}})   # after a gap (the namespace left the fetches for a while)
    assert rows.serve([40.0]) == {40.0: {"a": 4.0}} and rows.serve([25.0, 30.0, 35.0, 40.0]) is None
    rows.drop_before(20.0)
    assert list(rows.times) == [20.0, 25.0, 40.0] and rows.serve([15.0]) is None
    assert sorted(rows.pods) == ["a", "c"], "a pod with no sample left is forgotten"
    rows.drop_before(41.0)
    assert len(rows.times) == 0 and rows.pods == {}


def test_a_rollout_the_grid_has_not_kept_is_read_by_a_late_query_and_errors_are_not_kept() -> None:
    shop, memory = Shop(), SeenIntervals()
    shared = SharedQueries(shop)
    # A rollout whose analysis began long ago (an operator restart): its first step reads its whole wave, in
    # a query of the shared form (one per template), from its first step.
    late = gather(shop, spec(), status(), namespace="team-1", now=at(300.5), memory=memory,
                  rollout=("team-1", "release", "uid"), shared=shared)
    assert late == gather(Shop(), spec(), status(), namespace="team-1", now=at(300.5))
    assert [q for q, _, _ in shop.asked if q.startswith("sum by (pod)")] == []
    assert len(shop.asked) == 3 and shop.asked[0][1] == at(5)
    shop.down = True
    down = gather(shop, spec(), status(), namespace="team-2", now=at(305.5), memory=memory,
                  rollout=("team-2", "release", "uid"), shared=shared)
    assert all(m.error == "Prometheus unreachable" for m in down.metrics.values())
    shop.down = False
    up = gather(shop, spec(), status(), namespace="team-2", now=at(305.5), memory=memory,
                rollout=("team-2", "release", "uid"), shared=shared)
    assert up == gather(Shop(), spec(), status(), namespace="team-2", now=at(305.5))


def test_late_rollouts_that_ask_at_once_share_one_query_and_judge_what_their_own_would() -> None:
    """Reconciles that come late (waiting for a worker at N = 1,000) ask for steps older than the grid keeps,
    each from its own first step: those that wait while such a query runs share the next one."""
    class Slow(Shop):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()
            self.held = False

        def range_by(self, query: str, label: str | tuple[str, ...], *, start: datetime, end: datetime,
                     step_seconds: float) -> Grouped:
            if not self.held:
                self.held = True
                assert self.release.wait(10)
            return super().range_by(query, label, start=start, end=end, step_seconds=step_seconds)

    shop = Slow()
    shared = SharedQueries(shop)
    split = 'sum by (namespace, pod) (increase(orders_total{namespace=~"<<namespaces>>"}[5s]))'
    now = at(400.5)
    # Each late rollout wants the steps since its own last judgement, 2 to 7 minutes ago.
    wanted = {ns: [SINCE.timestamp() + 5.0 * k for k in range(5 + 6 * i, 80)] for i, ns in enumerate(NAMESPACES)}
    answers: dict[str, tuple] = {}

    def ask(ns: str) -> None:
        answers[ns] = shared.per_pod(split, ns, wanted[ns], 5.0, now)

    first_then_the_rest(ask, lambda: shop.held, lambda: len(next(iter(shared._lates.values())).queued),
                        shop.release)
    assert [q.count("|") for q, _, _ in shop.asked] == [0, len(NAMESPACES) - 2], "the first asker, then all others"
    assert shop.asked[1][1].timestamp() == wanted[NAMESPACES[1]][0], "from the earliest step the others asked for"
    for ns in NAMESPACES:
        values, error = answers[ns]
        assert error is None
        assert values == {t: {pod: Shop.value(ns, pod, split, t) for pod in shop.pods(ns)} for t in wanted[ns]}
    # Asked again for steps the last late query answered: served from it, no query.
    assert shared.per_pod(split, NAMESPACES[3], wanted[NAMESPACES[3]], 5.0, now)[0] == answers[NAMESPACES[3]][0]
    assert len(shop.asked) == 2


def test_firing_alerts_are_asked_once_for_all_rollouts_and_matched_in_each() -> None:
    shop, shared = Shop(), SharedQueries(Shop())
    shared.provider = shop
    shop.firing = ({"alertname": "OrdersDown", "team": "a", "alertstate": "firing"},
                   {"alertname": "Latency", "team": "b", "alertstate": "firing"})
    seen_a = gather(shop, spec({"team": "a"}), status(), namespace="team-1", now=at(20.5), memory=SeenIntervals(),
                    rollout=("team-1", "release", "uid"), shared=shared)
    seen_b = gather(shop, spec({"team": "b"}), status(), namespace="team-2", now=at(20.7), memory=SeenIntervals(),
                    rollout=("team-2", "release", "uid"), shared=shared)
    assert seen_a.alerts == ("OrdersDown",) and seen_b.alerts == ("Latency",)
    assert shop.label_queries == ['ALERTS{alertstate="firing"}']
    gather(shop, spec({"team": "a"}), status(), namespace="team-1", now=at(25.5), memory=SeenIntervals(),
           rollout=("team-1", "release", "uid"), shared=shared)
    assert len(shop.label_queries) == 2, "asked again a second later"


def start_six(shop: Shop, shared: SharedQueries, apart: float) -> None:
    """Six rollouts that start within one 5 s interval of the grid each ask for their pre-rollout counts, `apart`
    seconds after one another, and get what each would alone."""
    memory = SeenIntervals()
    for i, ns in enumerate(NAMESPACES):
        started = SINCE + timedelta(seconds=0.5 * i)
        now = started + timedelta(seconds=0.2 + apart * i)
        seen = gather(shop, spec(), status(since=started), namespace=ns, now=now, memory=memory,
                      rollout=(ns, "release", f"uid-{ns}"), shared=shared)
        # Alone, the window ends when the rollout started; shared, at the start of the grid's interval (the
        # same for all six), up to an interval earlier.
        alone = gather(Shop(), spec(), status(since=SINCE), namespace=ns, now=now)
        assert seen.metrics["order-rate"].pre_rollout is not None
        assert ({m: d.pre_rollout for m, d in seen.metrics.items()}
                == {m: d.pre_rollout for m, d in alone.metrics.items()})


def test_rollouts_that_start_in_the_same_interval_share_their_pre_rollout_queries() -> None:
    shop = Shop()
    start_six(shop, SharedQueries(shop), apart=0.0)
    # Orders, errors and requests, each asked once for the six rollouts, one after the other: the first
    # asker's namespace, then each later one's (asked while none is under way, a namespace joins alone).
    assert len(shop.instants) == 3 * len(NAMESPACES)
    assert {q.count("|") for q in shop.instants} == {0}


def test_rollouts_that_ask_while_a_query_is_under_way_join_the_next_one() -> None:
    """Six rollouts ask at once: the first query takes the first asker's namespace; every other asker waits
    for it and then shares a single second one."""
    class Slow(Shop):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
            if len(self.instants) == 0:
                self.instants.append("held")
                assert self.release.wait(10)
                self.instants.pop()
            return super().instant_by(query, label, at=at)

    shop = Slow()
    shared = SharedQueries(shop)
    split = "sum by (namespace, pod) (increase(orders_total{namespace=~\"<<namespaces>>\"}[10m]))"
    answers: dict[str, dict[str, float] | None] = {}

    def ask(ns: str) -> None:
        answers[ns] = shared.instant_per_pod(split, ns, SINCE.timestamp(), SINCE)[0]

    first_then_the_rest(ask, lambda: bool(shop.instants), lambda: len(next(iter(shared._instants.values())).queued),
                        shop.release)
    assert [q.count("|") for q in shop.instants] == [0, len(NAMESPACES) - 2]
    for ns in NAMESPACES:
        assert answers[ns] == {pod: 100 * Shop.value(ns, pod, split, SINCE.timestamp()) for pod in shop.pods(ns)}


def test_rollouts_the_watch_shows_starting_in_the_same_interval_are_in_the_first_pre_rollout_query() -> None:
    """The operator's watch names the rollouts that started in the same interval of the grid: the first asker's
    pre-rollout query takes their namespaces too, and the later askers send nothing."""
    shop, grid = Shop(), SINCE.timestamp()
    shared = SharedQueries(shop, starting=lambda t, interval: set(NAMESPACES) if (t, interval) == (grid, 5.0)
                           else set())
    start_six(shop, shared, apart=3.0)
    assert len(shop.instants) == 3, "orders, errors and requests: once for the six rollouts"
    assert {q.count("|") for q in shop.instants} == {len(NAMESPACES) - 1}


def test_the_starting_hint_names_the_rollouts_that_started_in_that_interval_without_pre_rollout_counts() -> None:
    from guarded.handlers.queries import starting
    from guarded.kube.cache import WatchCache

    def rollout(ns: str, started: str | None, interval: str | None = "5s", recorded: bool = False) -> dict:
        status: dict = {"stage": "Bake"}
        if started:
            status["startedAt"] = started
        if recorded:
            status["analysis"] = {"preRollout": [{"metric": "order-rate", "events": 3, "requests": 60}]}
        return {"metadata": {"namespace": ns, "name": "release"},
                "spec": {"analysis": {"interval": interval}} if interval else {}, "status": status}

    cache = WatchCache()
    cache.serve("guardedrollouts", {(o["metadata"]["namespace"], "release"): [o] for o in (
        rollout("a", "2026-01-01T12:00:00Z"), rollout("b", "2026-01-01T12:00:04.9Z"),
        rollout("c", "2026-01-01T12:00:05Z"), rollout("d", "2026-01-01T12:00:01Z", recorded=True),
        rollout("e", "2026-01-01T12:00:02Z", interval="10s"), rollout("f", None), rollout("g", "2026-01-01T12:00:03Z",
                                                                                           interval=None),
        rollout("h", "not a time"))})
    assert starting(cache, SINCE.timestamp(), 5.0) == {"a", "b"}
    assert starting(cache, SINCE.timestamp() + 5, 5.0) == {"c"}
    assert starting(cache, SINCE.timestamp(), 10.0) == {"e"}


def test_namespaces_the_hint_names_are_in_the_fetch_before_they_ask() -> None:
    """The operator's watch names the rollouts whose analysis is under way: a fetch takes their namespaces
    too, so one that asks later finds its counts there and sends nothing."""
    shop, memory = Shop(), SeenIntervals()
    shared = SharedQueries(shop, hint=lambda interval: set(NAMESPACES) if interval == 5.0 else set())
    for ns in NAMESPACES:
        now = at(32.5)
        seen = gather(shop, spec(), status(), namespace=ns, now=now, memory=memory,
                      rollout=(ns, "release", f"uid-{ns}"), shared=shared)
        assert seen == gather(Shop(), spec(), status(), namespace=ns, now=now)
    assert len(shop.asked) == 3, "orders, errors and requests, once for all six rollouts"


def test_the_hint_names_the_rollouts_analysing_at_that_interval() -> None:
    from guarded.handlers.queries import analysing
    from guarded.kube.cache import WatchCache

    def rollout(ns: str, stage: str, interval: str | None) -> dict:
        return {"metadata": {"namespace": ns, "name": "release"},
                "spec": {"analysis": {"interval": interval}} if interval else {}, "status": {"stage": stage}}

    cache = WatchCache()
    cache.serve("guardedrollouts", {(o["metadata"]["namespace"], "release"): [o] for o in (
        rollout("a", "Bake", "5s"), rollout("b", "ScaleCanary", "5s"), rollout("c", "Succeeded", "5s"),
        rollout("d", "Bake", "10s"), rollout("e", "Bake", None), rollout("f", "Gate", "5s"))})
    assert analysing(cache, 5.0) == {"a", "b", "f"}
    assert analysing(cache, 10.0) == {"d"}


def test_a_service_without_counts_at_the_shared_time_is_asked_at_its_own_start() -> None:
    """Traffic that began within the grid's interval: nothing at its start, so the rollout asks for the window
    up to the moment it started, as it would alone."""
    class Young(Shop):
        def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
            self.instants.append(query)
            return Grouped()    # no series yet at the grid's time

    shop = Young()
    started = SINCE + timedelta(seconds=3)
    seen = gather(shop, spec(), status(since=started), namespace="team-1", now=started + timedelta(seconds=0.2),
                  memory=SeenIntervals(), rollout=("team-1", "release", "uid"), shared=SharedQueries(shop))
    assert seen.metrics["order-rate"].pre_rollout is not None
    assert seen == gather(Shop(), spec(), status(since=started), namespace="team-1",
                          now=started + timedelta(seconds=0.2))
