"""The operator's own Prometheus metrics, read off what one reconcile already has.

Why derived rather than instrumented: the core's Decision already says everything worth counting
(the status it moves to, the events it records, the analysis record with its evidence), so the
metrics are a reading of (observations, old status, decision, seconds) and the reconcile needs a
single call, made after the status is written. Counting only persisted decisions matters: a
decision whose write conflicts is thrown away and decided again on fresh data, and must not count
its transitions twice.

Metrics are per process. With peering only the active replica reconciles, so only it reports
rollouts (its daemons stop when it pauses, and `forget` takes their phases out of the gauge);
queries sum over replicas.

Wave transitions name positions (core/draft.position): a wave by its 1-based number ("1", "2", ...),
otherwise the stage (Pending, Promote, Succeeded, RollingBack, RolledBack, Retiring, Failed). One
decision may pass several positions (Retired -> Pending -> wave 1); the Decision lists each move.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter as Tally
from collections.abc import Iterator
from contextvars import ContextVar

import urllib3
from kubernetes.client.rest import ApiException
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from guarded.api.rollout import AnalysisRecord, GuardedRolloutStatus
from guarded.core.engine import Decision
from guarded.core.observations import Observations
from guarded.kube.client import Conflict

PREFIX = "guarded"
# No `_created` series beside each counter and histogram: they doubled a scrape (0.75 MB at N = 335, per-rollout
# labels) and its cost to the operator's one event loop; rate() and increase() never read them.
disable_created_metrics()
DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 90.0)
WAIT_BUCKETS = (*RECONCILE_BUCKETS, 180.0, 300.0)  # a due reconcile may wait longer than one may run
PER_RECONCILE_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)

# What the reconcile running in this context has sent so far (run_blocking carries the context into the
# worker threads): "api" for Kubernetes requests, "query" for Prometheus queries.
_SENT: ContextVar[Tally[str] | None] = ContextVar("guarded_sent", default=None)

_ROLLBACK = frozenset({"RollingBack", "RolledBack"})
_PENDING, _FIRST_WAVE = "Pending", "1"  # the move that starts a rollout


def new_analysis_record(old: GuardedRolloutStatus, new: GuardedRolloutStatus) -> AnalysisRecord | None:
    """The analysis step this decision made, if it made one (a restart keeps old records: not new)."""
    last_at = new.analysis.last_at
    if last_at is None or last_at == old.analysis.last_at or not new.analysis.recent:
        return None
    record = new.analysis.recent[-1]
    return record if record.time == last_at else None


def _api_error_code(exc: BaseException) -> str | None:
    """The Kubernetes API error an exception stands for: HTTP status, timeout, connection; else None."""
    if isinstance(exc, Conflict):
        return "409"
    if isinstance(exc, ApiException):
        return str(exc.status or "unknown")
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        exc = exc.reason or exc
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
            exc, urllib3.exceptions.NewConnectionError):  # which urllib3 derives from ConnectTimeoutError
        return "timeout"
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError):
        return "connection"
    return None


class Telemetry:
    """One set of the operator's metrics in its own registry (tests make fresh ones)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rollouts = Gauge(f"{PREFIX}_rollouts", "GuardedRollouts this replica drives, by phase.",
                              ("namespace", "phase"), registry=r)
        self.wave_transitions = Counter(
            f"{PREFIX}_wave_transitions", "Moves of a rollout between waves and stages (from, to).",
            ("namespace", "rollout", "from", "to"), registry=r)
        self.judgements = Counter(
            f"{PREFIX}_judgements", "Judgements of a guard (metric) by one judge, by result (Pass/Fail/Inconclusive).",
            ("namespace", "guard", "judge", "result"), registry=r)
        self.analysis_steps = Counter(f"{PREFIX}_analysis_steps", "Analysis steps by overall verdict.",
                                      ("namespace", "result"), registry=r)
        self.rollbacks = Counter(f"{PREFIX}_rollbacks", "Rollbacks started, by reason.", ("namespace", "reason"),
                                 registry=r)
        self.emergency_releases = Counter(
            f"{PREFIX}_emergency_releases", "Emergency releases (spec.emergency, shortened bakes) started.",
            ("namespace",), registry=r)
        self.decision_seconds = Histogram(f"{PREFIX}_decision_seconds", "Time spent in the pure decide().",
                                          buckets=DECISION_BUCKETS, registry=r)
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_seconds", "One observe-decide-act-persist round, by result "
            "(ok, conflict, error, timeout).", ("result",), buckets=RECONCILE_BUCKETS, registry=r)
        self.kube_errors = Counter(f"{PREFIX}_kubernetes_api_errors",
                                   "Kubernetes API calls that failed a reconcile, by HTTP status or kind.",
                                   ("code",), registry=r)
        self.query_errors = Counter(f"{PREFIX}_metric_query_errors",
                                    "Analysis queries that failed, by guard (alerts: the ALERTS query).",
                                    ("namespace", "guard"), registry=r)
        self.api_requests = Counter(
            f"{PREFIX}_kubernetes_api_requests", "Kubernetes API requests the operator's own client sent, by verb "
            "and resource (kopf's watches and its own patches are not counted).", ("verb", "resource"), registry=r)
        self.metric_queries = Counter(f"{PREFIX}_metric_queries", "Prometheus queries sent, by kind "
                                      "(range, instant, labels).", ("kind",), registry=r)
        self.fence_checks = Counter(
            f"{PREFIX}_fence_checks", "Split-brain fence checks before a decision's actions, by what answered "
            "(watch: the rollouts' version watch vouched; server: a metadata GET of the rollout).", ("by",),
            registry=r)
        self.version_watch_lag = Histogram(
            f"{PREFIX}_version_watch_lag_seconds", "From sending a status write of a rollout to the rollouts' "
            "version watch showing it: the fence's watch vouches only while this is under a second.",
            buckets=WAIT_BUCKETS, registry=r)
        self.cache_reads = Counter(
            f"{PREFIX}_cache_reads", "Reads of an object from the watch cache, by resource and result (hit; miss: "
            "asked the API server, the copy not trusted).", ("resource", "result"), registry=r)
        self.reconcile_wait_seconds = Histogram(
            f"{PREFIX}_reconcile_wait_seconds", "Time a due reconcile waited for one of the operator's reconcile "
            "workers (GUARDED_RECONCILE_WORKERS), before its round began; changing: the rollout had a change out "
            "(such reconciles get 3 of every 4 workers freed); pressing: restoring the stable, a user's request "
            "not yet handled, its canary just Ready or in its wave's first two judgements, or within reach of a "
            "Fail (served first).",
            ("changing", "pressing"), buckets=WAIT_BUCKETS, registry=r)
        self.reconcile_api_requests = Histogram(
            f"{PREFIX}_reconcile_api_requests", "Kubernetes API requests sent by one reconcile.",
            buckets=PER_RECONCILE_BUCKETS, registry=r)
        self.reconcile_metric_queries = Histogram(
            f"{PREFIX}_reconcile_metric_queries", "Prometheus queries sent by one reconcile.",
            buckets=PER_RECONCILE_BUCKETS, registry=r)
        self.reconcile_step_seconds = Histogram(
            f"{PREFIX}_reconcile_step_seconds", "Time one step of a reconcile took (read, analysis, config, guard, "
            "observe, act, persist): where a slow reconcile spent it.", ("step",),
            buckets=RECONCILE_BUCKETS, registry=r)
        self._phases: dict[tuple[str, str], str] = {}

    # -- counting what is sent ----------------------------------------------------------------
    def api_request(self, verb: str, resource: str) -> None:
        """One Kubernetes API request (kube.client's observer); any thread."""
        self.api_requests.labels(verb, resource).inc()
        sent = _SENT.get()
        if sent is not None:
            sent["api"] += 1

    def fence_check(self, by: str) -> None:
        """One split-brain fence check (handlers/fence), answered by the version watch or the API server."""
        self.fence_checks.labels(by).inc()

    def version_lag(self, seconds: float) -> None:
        """How long the version watch took to show a status write of ours (kube.versions' observer); any thread."""
        self.version_watch_lag.observe(seconds)

    def cache_read(self, resource: str, hit: bool) -> None:
        """One read from the watch cache (kube.cache's observer)."""
        self.cache_reads.labels(resource, "hit" if hit else "miss").inc()

    def metric_query(self, kind: str) -> None:
        """One Prometheus query (metrics.prometheus's observer); any thread."""
        self.metric_queries.labels(kind).inc()
        sent = _SENT.get()
        if sent is not None:
            sent["query"] += 1

    # -- reading one reconcile --------------------------------------------------------------
    def record(self, obs: Observations, old: GuardedRolloutStatus, decision: Decision, seconds: float) -> None:
        """Count what one persisted decision did. Called once per reconcile, after the status write."""
        ns, name = obs.namespace, obs.name
        self.decision_seconds.observe(seconds)
        self._set_phase(ns, name, str(decision.status.phase))
        for move in decision.transitions:  # typed by the engine as it moved (core/draft.Draft.update)
            src, dst = move.source, move.target
            self.wave_transitions.labels(ns, name, src, dst).inc()
            if dst in _ROLLBACK and src not in _ROLLBACK:
                self.rollbacks.labels(ns, decision.status.rollback_reason or "Unknown").inc()
            if src == _PENDING and dst == _FIRST_WAVE and decision.status.emergency:
                self.emergency_releases.labels(ns).inc()  # a start (or a restart) with the emergency plan
        record = new_analysis_record(old, decision.status)
        if record is not None:
            self.analysis_steps.labels(ns, record.verdict).inc()
            for judgement in record.judgements:
                for evidence in judgement.evidence:
                    self.judgements.labels(ns, judgement.metric, evidence.judge, evidence.verdict).inc()
                if not judgement.evidence:  # no data: the metric was judged without any judge running
                    self.judgements.labels(ns, judgement.metric, "None", judgement.verdict).inc()
            if record.alerts:
                self.judgements.labels(ns, "alerts", "ALERTS", "Fail").inc()
        if obs.analysis is not None:
            for metric, data in sorted(obs.analysis.metrics.items()):
                if data.error:
                    self.query_errors.labels(ns, metric).inc()
            if obs.analysis.alerts_error:
                self.query_errors.labels(ns, "alerts").inc()

    def forget(self, namespace: str, name: str) -> None:
        """This replica no longer drives the rollout (deleted, or the replica paused): out of the gauge, and its
        wave transitions' series go. Once no rollout of its namespace is left, every series of that namespace
        goes: an operator that has seen thousands of namespaces come and go keeps none of theirs (issue 11)."""
        phase = self._phases.pop((namespace, name), None)
        if phase is not None:
            self.rollouts.labels(namespace, phase).dec()
        _drop(self.wave_transitions, namespace=namespace, rollout=name)
        if not any(ns == namespace for ns, _ in self._phases):
            for metric in (self.rollouts, self.judgements, self.analysis_steps, self.rollbacks,
                           self.emergency_releases, self.query_errors):
                _drop(metric, namespace=namespace)

    def _set_phase(self, namespace: str, name: str, phase: str) -> None:
        previous = self._phases.get((namespace, name))
        if previous == phase:
            return
        if previous is not None:
            self.rollouts.labels(namespace, previous).dec()
        self.rollouts.labels(namespace, phase).inc()
        self._phases[(namespace, name)] = phase

    @contextlib.contextmanager
    def reconciling(self) -> Iterator[None]:
        """Time one reconcile and count the API error that failed it; the exception goes on unchanged."""
        started = time.perf_counter()
        sent: Tally[str] = Tally()
        token = _SENT.set(sent)
        try:
            yield
        except Exception as exc:
            code = _api_error_code(exc)
            if code is not None:
                self.kube_errors.labels(code).inc()
            result = ("conflict" if isinstance(exc, Conflict)
                      else "timeout" if isinstance(exc, TimeoutError) else "error")
            self.reconcile_seconds.labels(result).observe(time.perf_counter() - started)
            raise
        else:
            self.reconcile_seconds.labels("ok").observe(time.perf_counter() - started)
        finally:
            _SENT.reset(token)
            self.reconcile_api_requests.observe(sent["api"])
            self.reconcile_metric_queries.observe(sent["query"])

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step of a reconcile (observed whether it ended in an exception or not)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.reconcile_step_seconds.labels(name).observe(time.perf_counter() - started)

    # -- what is exposed ----------------------------------------------------------------------
    def metric_names(self) -> frozenset[str]:
        """Every series name a scrape can show (counters' _total, histograms' _bucket/_sum/_count)."""
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("", "_sum", "_count")}
        names: set[str] = set()
        for family in self.registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
        return frozenset(names)


def _drop(metric: Counter | Gauge, **match: str) -> None:
    """Remove the series of a labelled metric whose labels include `match`."""
    names = metric._labelnames   # prometheus_client lists a metric's series only through these two
    for values in list(metric._metrics):
        labels = dict(zip(names, values, strict=True))
        if all(labels.get(k) == v for k, v in match.items()):
            metric.remove(*values)


def _process_registry() -> CollectorRegistry:
    """The served registry also carries the process's CPU, memory and GC (the operator's own health)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


TELEMETRY = Telemetry(_process_registry())
record = TELEMETRY.record
forget = TELEMETRY.forget
reconciling = TELEMETRY.reconciling
step = TELEMETRY.step
api_request = TELEMETRY.api_request
fence_check = TELEMETRY.fence_check
version_lag = TELEMETRY.version_lag
metric_query = TELEMETRY.metric_query
cache_read = TELEMETRY.cache_read
