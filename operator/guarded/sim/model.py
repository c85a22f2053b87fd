"""The simulation on plain data: what the cluster looks like in, per-pod counters out.

Kept free of I/O and of the clock so that it is unit-tested without a cluster, and deterministic:
given the seed, the same sequence of observations and the same tick lengths give the same counters
(pods and services are visited in sorted order, so the random draws happen in a fixed order).

A "service" is the pods of one namespace with the same ``app`` label. Only its Ready pods that are
not being deleted serve; they share the service's request rate equally, like a Service's endpoints.
Pods behind an HTTPRoute (a backendRef's Service selects them) take the route's requests instead, split
by the route's weights (``guarded.sim.routes``); the other pods of their app then take none.
Every number a pod or namespace can set is an annotation (names below); a value that does not parse
falls back to the default and is reported, so that a typo shows up in the log instead of silently.

A pod with ``sim.guarded.dev/config-key: KEY`` also takes its numbers from the ConfigMaps and Secrets
it reads (volumes, projected volumes, then each container's envFrom, in that order): the first of
them that has KEY wins, and its value, a JSON or YAML mapping, overrides the annotations with its
entries ``rps``, ``error-ratio``, ``order-ratio`` and ``latency-ms`` (other entries are ignored).
So a configuration change hurts exactly the pods that read the new version. An object or key that
is missing, a value that is not a mapping, or an entry that is not a number, leaves the annotations
in force and is reported (without a Secret's values).
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from guarded.sim.routes import RouteObservation, routed_rates
from guarded.sim.sampling import binomial, latency_buckets, poisson

PREFIX = "sim.guarded.dev/"
ENABLED = PREFIX + "enabled"
RPS = PREFIX + "rps"
ERROR_RATIO = PREFIX + "error-ratio"
ORDER_RATIO = PREFIX + "order-ratio"
LATENCY_MS = PREFIX + "latency-ms"
ORDER_RATIO_FACTOR = PREFIX + "order-ratio-factor"  # on a namespace: multiplies every pod's order ratio
ERROR_RATIO_ADD = PREFIX + "error-ratio-add"  # on a namespace: added to every pod's error ratio
CONFIG_KEY = PREFIX + "config-key"  # on a pod: the key, in the ConfigMaps and Secrets it reads, of its numbers
CONFIG_ENTRIES = (RPS, ERROR_RATIO, ORDER_RATIO, LATENCY_MS)  # a config value's entries are these, unprefixed
CONFIG_MAP, SECRET = "ConfigMap", "Secret"

DEFAULT_RPS = 100.0
DEFAULT_ERROR_RATIO = 0.005
DEFAULT_ORDER_RATIO = 0.05
DEFAULT_LATENCY_MS = 40.0

# Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PodKey = tuple[str, str]  # (namespace, pod name)
ServiceKey = tuple[str, str]  # (namespace, app)
ConfigRef = tuple[str, str]  # (CONFIG_MAP or SECRET, name), as a pod references it
ConfigObjectKey = tuple[str, str, str]  # (namespace, CONFIG_MAP or SECRET, name)


@dataclass(frozen=True)
class PodObservation:
    """One pod as the simulator needs to see it."""

    namespace: str
    name: str
    app: str
    ready: bool
    deleting: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    config_refs: tuple[ConfigRef, ...] = ()  # the ConfigMaps and Secrets it reads, in search order
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Observation:
    """All pods (opted in or not), the annotations of each namespace, as of one poll, and the data
    (decoded text) of the ConfigMaps and Secrets of the namespaces where a pod has a config key."""

    pods: tuple[PodObservation, ...]
    namespace_annotations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    config_data: Mapping[ConfigObjectKey, Mapping[str, str]] = field(default_factory=dict)
    routes: tuple[RouteObservation, ...] = ()
    service_selectors: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)  # (ns, name)


@dataclass(frozen=True)
class InvalidAnnotation:
    namespace: str
    name: str  # the pod's name, or "" for an annotation on the namespace itself
    key: str
    value: str


@dataclass(frozen=True)
class InvalidConfig:
    """A pod's config key that is not used, whole or in one entry. Never holds a Secret's values."""

    namespace: str
    name: str  # the pod's name
    key: str  # the pod's config key
    problem: str  # one of the texts below
    source: str = ""  # where the key was found ("ConfigMap/shop-config"); "" if nowhere
    searched: tuple[str, ...] = ()  # if found nowhere: what the pod reads ("Secret/x (missing)" if absent)
    entry: str = ""  # the entry that is not a number, or ""
    value: str = ""  # that entry's value, from a ConfigMap only


NOT_FOUND = "no ConfigMap or Secret the pod reads has the key"
NOT_A_MAPPING = "the value is not a JSON or YAML mapping"
NOT_A_NUMBER = "the entry is not a number"


@dataclass(frozen=True)
class Behaviour:
    """How one pod answers, after its namespace's adjustments."""

    error_ratio: float
    order_ratio: float
    latency_s: float


def enabled(annotations: Mapping[str, str]) -> bool:
    return annotations.get(ENABLED, "").strip().lower() == "true"


def simulated(pod: PodObservation) -> bool:
    """Whether the pod has series: opted in, with an ``app`` label, not being deleted."""
    return enabled(pod.annotations) and bool(pod.app) and not pod.deleting


def _number(annotations: Mapping[str, str], key: str, default: float, lo: float, hi: float,
            where: tuple[str, str], invalid: list[InvalidAnnotation]) -> float:
    """The annotation as a float clamped to [lo, hi]; the default (and a report) if it is not a number."""
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if value != value:  # NaN, from the annotation or from a failed parse
        invalid.append(InvalidAnnotation(where[0], where[1], key, raw))
        return default
    return min(hi, max(lo, value))


def behaviour(pod: PodObservation, namespace_annotations: Mapping[str, str],
              invalid: list[InvalidAnnotation] | None = None) -> Behaviour:
    """The pod's ratios and latency from its annotations, adjusted by its namespace's."""
    bad: list[InvalidAnnotation] = [] if invalid is None else invalid
    here, ns = (pod.namespace, pod.name), (pod.namespace, "")
    a = pod.annotations
    error = _number(a, ERROR_RATIO, DEFAULT_ERROR_RATIO, 0.0, 1.0, here, bad)
    order = _number(a, ORDER_RATIO, DEFAULT_ORDER_RATIO, 0.0, 1.0, here, bad)
    latency_ms = _number(a, LATENCY_MS, DEFAULT_LATENCY_MS, 0.0, 3_600_000.0, here, bad)
    factor = _number(namespace_annotations, ORDER_RATIO_FACTOR, 1.0, 0.0, 1e9, ns, bad)
    add = _number(namespace_annotations, ERROR_RATIO_ADD, 0.0, -1.0, 1.0, ns, bad)
    return Behaviour(
        error_ratio=min(1.0, max(0.0, error + add)),
        order_ratio=min(1.0, order * factor),
        latency_s=latency_ms / 1000.0,
    )


def service_rps(pods: list[PodObservation], default_rps: float,
                invalid: list[InvalidAnnotation] | None = None) -> float:
    """The rate the most pods of a service say (a pod without the annotation says the default).

    A majority, not one pod's word, because a rollout changes pods one at a time. Ties go to the
    higher rate, so the result does not depend on the order pods were listed in.
    """
    bad: list[InvalidAnnotation] = [] if invalid is None else invalid
    votes = Counter(_number(p.annotations, RPS, default_rps, 0.0, 1e9, p.key, bad) for p in pods)
    if not votes:
        return default_rps
    return max(votes.items(), key=lambda kv: (kv[1], kv[0]))[0]


@functools.lru_cache(maxsize=256)  # pods share a few values: parse each once, not per pod and tick
def parse_settings(text: str) -> Mapping[str, Any] | None:
    """The value as a mapping (JSON, else YAML), or None if it is neither or not a mapping."""
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (yaml.YAMLError, ValueError, TypeError):
            return None
    return doc if isinstance(doc, dict) else None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _find_config(pod: PodObservation, key: str, data: Mapping[ConfigObjectKey, Mapping[str, str]]
                 ) -> tuple[ConfigRef, str] | None:
    for kind, name in pod.config_refs:
        value = data.get((pod.namespace, kind, name), {}).get(key)
        if value is not None:
            return (kind, name), value
    return None


def config_overrides(pod: PodObservation, data: Mapping[ConfigObjectKey, Mapping[str, str]],
                     invalid: list[InvalidConfig]) -> dict[str, str]:
    """The annotation values that the pod's config key sets (none without one); problems go to `invalid`."""
    key = pod.annotations.get(CONFIG_KEY, "").strip()
    if not key:
        return {}
    found = _find_config(pod, key, data)
    if found is None:
        searched = tuple(f"{kind}/{name}" + ("" if (pod.namespace, kind, name) in data else " (missing)")
                         for kind, name in pod.config_refs)
        invalid.append(InvalidConfig(pod.namespace, pod.name, key, NOT_FOUND, searched=searched))
        return {}
    (kind, name), text = found
    source = f"{kind}/{name}"
    settings = parse_settings(text)
    if settings is None:
        invalid.append(InvalidConfig(pod.namespace, pod.name, key, NOT_A_MAPPING, source))
        return {}
    overrides = {}
    for annotation in CONFIG_ENTRIES:
        entry = annotation.removeprefix(PREFIX)
        if entry not in settings:
            continue
        number = _finite(settings[entry])
        if number is None:
            shown = str(settings[entry]) if kind == CONFIG_MAP else ""
            invalid.append(InvalidConfig(pod.namespace, pod.name, key, NOT_A_NUMBER, source, entry=entry, value=shown))
        else:
            overrides[annotation] = repr(number)
    return overrides


def with_config(pod: PodObservation, data: Mapping[ConfigObjectKey, Mapping[str, str]],
                invalid: list[InvalidConfig]) -> PodObservation:
    """The pod with the annotations its config key overrides replaced (the pod itself if none)."""
    overrides = config_overrides(pod, data, invalid)
    return replace(pod, annotations={**pod.annotations, **overrides}) if overrides else pod


class _Counters:
    """One pod's running totals (mutable; exported only through frozen snapshots)."""

    __slots__ = ("app", "buckets", "duration_sum", "errors", "ok", "orders")

    def __init__(self, app: str) -> None:
        self.app = app
        self.ok = 0
        self.errors = 0
        self.orders = 0
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket, the last one is +Inf
        self.duration_sum = 0.0


@dataclass(frozen=True)
class PodSeries:
    """One pod's counters as exported: the histogram's buckets are cumulative, the last being +Inf."""

    namespace: str
    pod: str
    app: str
    ok: int
    errors: int
    orders: int
    buckets: tuple[int, ...]
    duration_sum: float

    @property
    def requests(self) -> int:
        return self.ok + self.errors


@dataclass(frozen=True)
class Snapshot:
    pods: tuple[PodSeries, ...] = ()
    ready: tuple[tuple[ServiceKey, int], ...] = ()  # Ready pod count of every service with a live pod


@dataclass(frozen=True)
class ServingPod:
    namespace: str
    name: str
    app: str


@dataclass(frozen=True)
class StepResult:
    """What changed in this step, for the log: pods that started or stopped serving, bad annotations."""

    started: tuple[ServingPod, ...] = ()
    stopped: tuple[ServingPod, ...] = ()
    invalid: tuple[InvalidAnnotation, ...] = ()
    invalid_config: tuple[InvalidConfig, ...] = ()


class Simulation:
    """Counters for every live opted-in pod, advanced one tick at a time.

    A pod has series from the first poll that shows it (opted in, with an ``app`` label, not being
    deleted) until the first poll that does not; only while it is Ready does it receive traffic.
    A pod whose ``app`` label changes starts its counters afresh, as its series' labels change.
    """

    def __init__(self, seed: int, default_rps: float = DEFAULT_RPS) -> None:
        self._rng = random.Random(seed)
        self.default_rps = default_rps
        self._counters: dict[PodKey, _Counters] = {}
        self._serving: dict[PodKey, str] = {}
        self._ready: dict[ServiceKey, int] = {}

    def step(self, observation: Observation, seconds: float) -> StepResult:
        """Advance by `seconds` of traffic to the pods of `observation`."""
        invalid_config: list[InvalidConfig] = []
        live = {
            p.key: with_config(p, observation.config_data, invalid_config)
            for p in sorted(observation.pods, key=lambda p: p.key)
            if simulated(p)
        }
        for key in [k for k, c in self._counters.items() if k not in live or c.app != live[k].app]:
            del self._counters[key]
        for key, pod in live.items():
            if key not in self._counters:
                self._counters[key] = _Counters(pod.app)

        serving = {k: p.app for k, p in live.items() if p.ready}
        started = tuple(ServingPod(k[0], k[1], a) for k, a in sorted(serving.items())
                        if self._serving.get(k) != a)
        stopped = tuple(ServingPod(k[0], k[1], a) for k, a in sorted(self._serving.items())
                        if serving.get(k) != a)
        self._serving = serving

        services: dict[ServiceKey, list[PodObservation]] = defaultdict(list)
        for pod in live.values():
            services[(pod.namespace, pod.app)].append(pod)
        invalid: list[InvalidAnnotation] = []
        rates, behind = routed_rates(
            observation.routes, observation.service_selectors, {k: p.labels for k, p in live.items() if p.ready},
            lambda keys: service_rps([live[k] for k in keys], self.default_rps, invalid))
        self._ready = {}
        for service in sorted(services):
            ready = [p for p in services[service] if p.ready]
            self._ready[service] = len(ready)
            # An app with a pod behind a route takes its requests through routes only: a pod of it that no
            # backend selects (a canary before its Service is in the route) is no Service's endpoint.
            unrouted = [] if any(p.key in behind for p in services[service]) else ready
            if unrouted:
                per_pod = service_rps(unrouted, self.default_rps, invalid) / len(unrouted)
                rates.update({p.key: per_pod for p in unrouted})
        for key, rate in sorted(rates.items()):
            pod = live[key]
            ns_annotations = observation.namespace_annotations.get(pod.namespace, {})
            self._serve(self._counters[key], behaviour(pod, ns_annotations, invalid), rate * seconds)
        return StepResult(started, stopped, tuple(dict.fromkeys(invalid)), tuple(dict.fromkeys(invalid_config)))

    def _serve(self, c: _Counters, b: Behaviour, expected_requests: float) -> None:
        n = poisson(self._rng, expected_requests)
        errors = binomial(self._rng, n, b.error_ratio)
        orders = binomial(self._rng, n - errors, b.order_ratio)
        buckets, duration = latency_buckets(self._rng, n, b.latency_s, BUCKETS)
        c.ok += n - errors
        c.errors += errors
        c.orders += orders
        for i, count in enumerate(buckets):
            c.buckets[i] += count
        c.duration_sum += duration

    def snapshot(self) -> Snapshot:
        """The counters as they stand, as immutable data another thread may read."""
        pods = []
        for (namespace, name), c in sorted(self._counters.items()):
            cumulative, running = [], 0
            for count in c.buckets:
                running += count
                cumulative.append(running)
            pods.append(PodSeries(namespace, name, c.app, c.ok, c.errors, c.orders, tuple(cumulative),
                                  c.duration_sum))
        return Snapshot(tuple(pods), tuple(sorted(self._ready.items())))
