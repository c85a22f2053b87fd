"""Queries shared by every rollout the operator judges: one range query per built-in template for all
rollouts, not one per rollout (issue 11).

The built-in guards' per-pod form (`sum by (pod) (...)`, metrics/queries.pod_split) is asked once `by
(namespace, pod)` over the namespaces of every rollout that asked for it lately, on a grid of times common
to all of them (multiples of the interval, metrics/gather._steps); each rollout then sums its own
canary's and stable's pods from the answer. So the queries per interval depend on the number of templates,
not of rollouts:

* a new grid step is fetched once, for every namespace that asked in the last ACTIVE_INTERVALS intervals,
  re-reading the steps that ended less than FINAL_AFTER ago (a late scrape may still change them, as
  gather's SeenIntervals assumes);
* a namespace that asks for a step it is not yet covered at joins the next fetch; askers that arrive
  while a fetch is under way wait for it, and the one after it takes every namespace that queued
  meanwhile (so a burst of new rollouts costs one query per template per round, not one each);
* what the grid cannot serve (steps older than it keeps, after a restart or a reconcile that came late) is
  read for all the askers that wait for such steps at once, in one query from the earliest step any of them
  asked for (`_late`); only steps off the grid are left to the asker, which reads them for itself.

Small answers that many rollouts ask alike (the firing alerts, a histogram's bucket bounds) are kept a
short while (`labels`).

An optimisation, never the source of truth: memory only; an error is never kept (each asker gets it,
and the next ask fetches again), and nothing here outlives the process."""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from guarded.metrics.provider import Labels, MetricProvider
from guarded.metrics.queries import SHARED_NAMESPACES as NAMESPACES
from guarded.metrics.queries import escape_label_value, regex_literal

FINAL_AFTER = 30.0              # seconds: a step that ended this long ago no longer changes
# A namespace that has not asked for this long leaves the shared fetches: long enough that a rollout whose
# reconciles come late (a busy operator or API server) is still in the next fetch, not in one of its own.
ACTIVE_INTERVALS = 12
# Steps kept beyond FINAL_AFTER, for askers behind: a rollout asks from the first interval it has not judged
# final, so one whose reconcile waited long for a worker asks that far back. At N = 1,000 rollouts, with 6
# (30 s at a 5 s interval) such askers sent most queries (31-39 per template per interval, issue 11).
KEEP_INTERVALS = 30


def _sampled(row: array[float]) -> bool:
    """Whether a pod has a sample at any step of its row (one without is forgotten)."""
    return not all(math.isnan(v) for v in row)


@dataclass
class _Rows:
    """One namespace's part of a shared query's grid: the steps fetched for it, in order, and each pod's value
    at them (NaN: no sample at that step), as arrays of doubles: 8 bytes a value, where a dict of floats per
    step and namespace took some 30 times that."""

    times: array[float] = field(default_factory=lambda: array("d"))
    pods: dict[str, array[float]] = field(default_factory=dict)

    def merge(self, fetched: dict[float, dict[str, float]]) -> None:
        """Take one fetch's steps for this namespace (a run of the grid, its pods' values at each): they replace
        what was kept from their first step on."""
        times = sorted(fetched)
        if not times:
            return
        cut = bisect.bisect_left(self.times, times[0])
        pods: dict[str, array[float]] = {}
        for pod in sorted(set(self.pods).union(*fetched.values())):
            kept = self.pods.get(pod)
            row = kept[:cut] if kept is not None else array("d", [math.nan]) * cut
            row.extend(fetched[t].get(pod, math.nan) for t in times)
            if _sampled(row):
                pods[pod] = row
        self.times = self.times[:cut] + array("d", times)
        self.pods = pods

    def drop_before(self, oldest: float) -> None:
        cut = bisect.bisect_left(self.times, oldest)
        if cut:
            self.times = self.times[cut:]
            self.pods = {pod: kept for pod, row in self.pods.items() if _sampled(kept := row[cut:])}

    def serve(self, steps: list[float]) -> dict[float, dict[str, float]] | None:
        """Each pod's value at `steps` (a pod without a sample at a step is left out of it), or None if any of
        them was not fetched for this namespace."""
        first = bisect.bisect_left(self.times, steps[0])
        if first + len(steps) > len(self.times) or any(self.times[first + i] != t for i, t in enumerate(steps)):
            return None
        return {t: {pod: row[first + i] for pod, row in self.pods.items() if not math.isnan(row[first + i])}
                for i, t in enumerate(steps)}


@dataclass
class _Shared:
    """One shared query's state: what each step held, per namespace, and who asked lately."""

    lock: threading.Lock = field(default_factory=threading.Lock)       # one fetch at a time; rows
    guard: threading.Lock = field(default_factory=threading.Lock)      # asked
    rows: dict[str, _Rows] = field(default_factory=dict)               # namespace -> its steps
    fetched_newest: dict[str, float] = field(default_factory=dict)   # namespace -> newest step fetched for it
    asked: dict[str, float] = field(default_factory=dict)            # namespace -> when it last asked


@dataclass
class _Late:
    """Late askers of one shared query: who waits, for which steps, and the last such query's answer."""

    lock: threading.Lock = field(default_factory=threading.Lock)       # one fetch at a time; served
    guard: threading.Lock = field(default_factory=threading.Lock)      # queued
    queued: dict[str, tuple[float, float]] = field(default_factory=dict)    # namespace -> (first, last step)
    served: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)


INSTANTS_KEPT = 600.0   # seconds an instant query's answers are kept for rollouts that ask for the same time


@dataclass
class _Instant:
    """One shared instant query at one time: the values per namespace and pod, and who waits for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    guard: threading.Lock = field(default_factory=threading.Lock)
    covered: set[str] = field(default_factory=set)
    queued: set[str] = field(default_factory=set)
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    made: float = 0.0


class SharedQueries:
    def __init__(self, provider: MetricProvider, hint: Callable[[float], Iterable[str]] | None = None,
                 starting: Callable[[float, float], Iterable[str]] | None = None) -> None:
        """`hint(interval)`: namespaces whose rollouts will ask soon (an analysis of that interval under way or
        about to begin), taken into every fetch before they ask: a rollout entering its analysis then finds
        its namespace in the shared answer rather than joining with a query of its own. `starting(at,
        interval)`: namespaces whose rollouts started in the interval that begins at `at` and will ask for
        their pre-rollout counts at `at`, taken into the first instant query at that time."""
        self.provider = provider
        self.hint = hint
        self.starting = starting
        self._lock = threading.Lock()
        self._queries: dict[tuple[str, float], _Shared] = {}
        self._labels: dict[str, tuple[float, Labels]] = {}
        self._instants: dict[tuple[str, float], _Instant] = {}
        self._lates: dict[tuple[str, float], _Late] = {}

    def _state(self, query: str, interval: float) -> _Shared:
        with self._lock:
            return self._queries.setdefault((query, interval), _Shared())

    def per_pod(self, query: str, namespace: str, steps: list[float], interval: float,
                now: datetime) -> tuple[dict[float, dict[str, float]] | None, str | None]:
        """Per step of `steps`, the namespace's pods' values of the shared `query` (NAMESPACES in it), or
        (None, None) when the grid cannot serve them all (the asker reads them itself), or the error."""
        if not steps:
            return {}, None
        t_now = now.timestamp()
        state = self._state(query, interval)
        with state.guard:   # before waiting for a fetch under way: the next one takes this namespace too
            state.asked[namespace] = t_now
        if steps[0] < t_now - FINAL_AFTER - KEEP_INTERVALS * interval:
            return self._late(query, namespace, steps, interval)   # older than what the grid keeps
        with state.lock:
            if state.fetched_newest.get(namespace, -math.inf) < steps[-1]:
                error = self._fetch(query, state, steps, interval, t_now, namespace)
                if error is not None:
                    return None, error
            rows = state.rows.get(namespace)
            served = rows.serve(steps) if rows is not None else None
            if served is not None:
                return served, None
        return self._late(query, namespace, steps, interval)

    def _late(self, query: str, namespace: str, steps: list[float],
              interval: float) -> tuple[dict[float, dict[str, float]] | None, str | None]:
        """Steps the grid does not hold for the namespace (a reconcile that came late, a restart): the askers
        waiting for such steps at once share one query, from the earliest step any of them asked for to the
        latest, instead of one each (at N = 1,000 rollouts, reconciles waited up to 88 s for a worker and
        late askers sent most of the queries: 38.8 per template per interval). Its answer is kept only until
        the next such query. (None, None) if it cannot serve them all: the asker reads them itself."""
        with self._lock:
            late = self._lates.setdefault((query, interval), _Late())
        with late.guard:   # before waiting for a fetch under way: the next one takes this namespace too
            late.queued[namespace] = (steps[0], steps[-1])
        with late.lock:
            got = late.served.get(namespace)
            if got is None or any(t not in got for t in steps):
                with late.guard:
                    wanted, late.queued = late.queued, {}
                wanted[namespace] = (steps[0], steps[-1])
                start, end = min(a for a, _ in wanted.values()), max(b for _, b in wanted.values())
                start = min(start, end - interval)   # two steps at least (a range whose start is its end)
                served, error = self._range(query, sorted(wanted), start, end, interval)
                late.served = served
                if error is not None:
                    return None, error
                got = served[namespace]
            if any(t not in got for t in steps):
                return None, None   # steps off this grid: the asker reads them itself
            return {t: dict(got[t]) for t in steps}, None

    def _range(self, query: str, namespaces: list[str], start: float, end: float,
               interval: float) -> tuple[dict[str, dict[float, dict[str, float]]], str | None]:
        """One range query of the shared form for `namespaces`, split: per namespace, per grid step from
        `start` to `end`, its pods' values (a step with no sample holds no pod); or ({}, the error)."""
        matcher = "|".join(escape_label_value(regex_literal(ns)) for ns in namespaces)
        grouped = self.provider.range_by(query.replace(NAMESPACES, matcher), ("namespace", "pod"),
                                         start=datetime.fromtimestamp(start, tz=UTC),
                                         end=datetime.fromtimestamp(end, tz=UTC), step_seconds=interval)
        if grouped.error:
            return {}, grouped.error
        grid = [round(start + interval * i, 3) for i in range(round((end - start) / interval) + 1)]
        split: dict[str, dict[float, dict[str, float]]] = {ns: {t: {} for t in grid} for ns in namespaces}
        for key, values in grouped.series.items():
            ns, pod = key.split("\x00", 1)
            if ns in split:
                for t, v in values.items():
                    at = split[ns].get(round(t, 3))
                    if at is not None:
                        at[pod] = v
        return split, None

    def _fetch(self, query: str, state: _Shared, steps: list[float], interval: float, t_now: float,
               namespace: str) -> str | None:
        """Fetch the grid up to steps[-1], for every namespace that asked lately and lacks it (state.lock held)."""
        newest = steps[-1]
        with state.guard:
            active = {ns for ns, at in state.asked.items() if at >= t_now - ACTIVE_INTERVALS * interval}
            for ns in set(state.asked) - active:
                del state.asked[ns]
                state.fetched_newest.pop(ns, None)
        if self.hint is not None:
            # A hint is an optimisation: without it, askers join as they ask.
            with contextlib.suppress(Exception):
                active |= set(self.hint(interval))
        wanted = sorted(ns for ns in active | {namespace} if state.fetched_newest.get(ns, -math.inf) < newest)
        # The steps a late scrape may still change, for every namespace (on the grid: the settling time in whole
        # intervals, 30 s is one and a half of 20 s). Older steps only for an asker with none kept yet, from its
        # first: a namespace fetched all along has them, and reading them again for every namespace made each
        # fetch several times larger at N = 1,000 (reconcile p99 15 s). What is still missing, `_late` reads.
        # Two steps at least: a range whose start is its end answers nothing (metrics/prometheus).
        settle = math.ceil(FINAL_AFTER / interval - 1e-9) * interval
        start = newest - settle - interval
        if namespace not in state.rows:
            start = max(min(steps[0], start), newest - settle - KEEP_INTERVALS * interval)
        start = min(start, newest - interval)
        fetched, error = self._range(query, wanted, start, newest, interval)
        if error is not None:
            return error
        for ns, per_step in fetched.items():
            state.rows.setdefault(ns, _Rows()).merge(per_step)
        for ns in wanted:
            state.fetched_newest[ns] = newest
        oldest = t_now - FINAL_AFTER - KEEP_INTERVALS * interval - interval
        for ns, rows in list(state.rows.items()):
            if rows.times and rows.times[0] < oldest:
                rows.drop_before(oldest)
            if not rows.times:
                del state.rows[ns]
        for ns in [ns for ns, t in state.fetched_newest.items() if t < oldest]:
            del state.fetched_newest[ns]   # a namespace the hint no longer names, long done (bounded memory)
        return None

    def instant_per_pod(self, query: str, namespace: str, at: float, now: datetime,
                        interval: float | None = None) -> tuple[dict[str, float] | None, str | None]:
        """The namespace's pods' values of the shared instant `query` (NAMESPACES in it) at `at`, or the error.
        Rollouts that ask for the same time share one query: those that ask while it runs join the next, and
        with `interval` (`at` starts one of its grid's intervals) those `starting` names join the first."""
        t_now = now.timestamp()
        with self._lock:
            state = self._instants.get((query, at))
            if state is None:
                state = self._instants[(query, at)] = _Instant(made=t_now)
            for key in [k for k, st in self._instants.items() if t_now - st.made > INSTANTS_KEPT]:
                del self._instants[key]
        with state.guard:
            state.queued.add(namespace)
        with state.lock:
            if namespace not in state.covered:
                with state.guard:
                    wanted, state.queued = sorted(state.queued - state.covered), set()
                asking = set(wanted) | {namespace}
                if self.starting is not None and interval:
                    with contextlib.suppress(Exception):   # a hint is an optimisation
                        asking |= set(self.starting(at, interval)) - state.covered
                wanted = sorted(asking)
                matcher = "|".join(escape_label_value(regex_literal(ns)) for ns in wanted)
                found = self.provider.instant_by(query.replace(NAMESPACES, matcher), ("namespace", "pod"),
                                                 at=datetime.fromtimestamp(at, tz=UTC))
                if found.error:
                    return None, found.error
                for ns in wanted:
                    state.values[ns] = {}
                for key, values in found.series.items():
                    ns, pod = key.split("\x00", 1)
                    if ns in state.values and values:
                        state.values[ns][pod] = next(iter(values.values()))
                state.covered.update(wanted)
            return dict(state.values.get(namespace, {})), None

    def labels(self, query: str, now: datetime, ttl: float) -> Labels:
        """An instant query's label sets, fetched at most once per `ttl` seconds (errors are not kept)."""
        t_now = now.timestamp()
        with self._lock:
            kept = self._labels.get(query)
        if kept is not None and t_now - kept[0] < ttl:
            return kept[1]
        found = self.provider.labels(query)
        if not found.error:
            with self._lock:
                self._labels[query] = (t_now, found)
                for q in [q for q, (at, _) in self._labels.items() if t_now - at > max(ttl, 60.0)]:
                    del self._labels[q]
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._queries)
