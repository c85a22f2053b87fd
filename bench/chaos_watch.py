"""bench/chaos's eyes: what the cluster shows, from the outside, and the invariants it must keep.

Two watches (every Deployment, every GuardedRollout, of the namespaces whose name starts with `chaos-`)
record each change the API server accepts, with the time it arrived; none is missed between two samples,
as a poller would. A watch broken by an API server restart lists again and goes on. The invariants are then
judged per namespace over what was recorded (`judge`), once its rollout has ended:

* capacity: Ready pods of the target and its canary together never below the target's replicas minus its
  maxUnavailable, except while a canary judged bad (or aborted) is removed at once, as designed (the
  window from the decision to roll back to the end of the rollback);
* the canary's share of Ready pods never above the bound of the wave the rollout was in (the operator
  acts before it writes the status, so a canary one wave ahead is allowed for 2 s, or until the next
  status write when a fault came in between: the decision whose status a kill lost is made again);
* each attempt's waves entered once each, in order, from the first, and all of them before a success;
* the target's pod template changed only at promotion, to the release's template;
* no wave entered and nothing promoted while paused (between an accepted pause and its resume);
* a bad release never promoted; a healthy one Succeeded.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from guarded.api.reasons import CAPACITY_FIRST
from guarded.api.rollout import Wave
from guarded.core.waves import weight_bound

GROUP, VERSION, PLURAL = "rollouts.guarded.dev", "v1alpha1", "guardedrollouts"
PREFIX = "chaos-"
LAG = 2.0          # seconds between an action and the status write that records its decision
FAULT_LAG = 60.0   # a fault up to this long before a lagging sample can explain it
ATTEMPT_STARTS = {"RolloutStarted", "Retired", "NewRevision", "RequestRetry"}


@dataclass
class Sample:
    at: float
    target_ready: int
    canary_ready: int
    template: str | None       # the target's pod template (canonical JSON); None: no target


@dataclass
class Namespace:
    """Everything recorded about one namespace."""

    samples: list[Sample] = field(default_factory=list)
    history: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    status_changes: list[float] = field(default_factory=list)
    target: Any = None
    canary: Any = None


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


_SERIALIZER = kubernetes.client.ApiClient()


def _template(deployment: Any) -> str:
    return json.dumps(_SERIALIZER.sanitize_for_serialization(deployment.spec.template), sort_keys=True)


class ClusterWatch:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.namespaces: dict[str, Namespace] = {}
        self.restarts = 0  # watches listed again after a break
        self.fresh: list[tuple[float, float]] = []  # (arrival, status.analysis.freshSince): a judgement with data
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(f,), daemon=True)
                         for f in (self._deployments, self._rollouts)]

    def start(self) -> ClusterWatch:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def of(self, namespace: str) -> Namespace:
        with self._lock:
            return self.namespaces.setdefault(namespace, Namespace())

    def status_changes(self) -> list[float]:
        with self._lock:
            return sorted(t for ns in self.namespaces.values() for t in ns.status_changes)

    def _loop(self, run: Any) -> None:
        while not self._stop.is_set():
            try:
                run()
            except Exception:  # a broken watch (an API server restarting): list again
                self.restarts += 1
                time.sleep(0.5)

    def _deployments(self) -> None:
        listed = self.apps.list_deployment_for_all_namespaces(_request_timeout=30)
        for d in listed.items:
            self._deployment(d, gone=False)
        stream = kubernetes.watch.Watch().stream(self.apps.list_deployment_for_all_namespaces,
                                                 resource_version=listed.metadata.resource_version,
                                                 timeout_seconds=60, _request_timeout=90)
        for event in stream:
            if self._stop.is_set():
                return
            self._deployment(event["object"], gone=event["type"] == "DELETED")

    def _deployment(self, d: Any, *, gone: bool) -> None:
        ns_name, name = d.metadata.namespace, d.metadata.name
        if not ns_name.startswith(PREFIX) or name not in ("shop", "shop-canary"):
            return
        ns = self.of(ns_name)
        with self._lock:
            setattr(ns, "canary" if name == "shop-canary" else "target", None if gone else d)
            t, c = ns.target, ns.canary
            ns.samples.append(Sample(
                at=time.time(), target_ready=(t.status.ready_replicas or 0) if t is not None else 0,
                canary_ready=(c.status.ready_replicas or 0) if c is not None else 0,
                template=_template(t) if t is not None else None))

    def _rollouts(self) -> None:
        listed = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=30)
        for obj in listed["items"]:
            self._rollout(obj)
        stream = kubernetes.watch.Watch().stream(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                                 resource_version=listed["metadata"]["resourceVersion"],
                                                 timeout_seconds=60, _request_timeout=90)
        for event in stream:
            if self._stop.is_set():
                return
            if event["type"] == "ERROR":
                raise ApiException(status=410, reason="watch expired")
            self._rollout(event["object"])

    def _rollout(self, obj: dict[str, Any]) -> None:
        ns_name = obj["metadata"]["namespace"]
        if not ns_name.startswith(PREFIX):
            return
        status = obj.get("status") or {}
        ns = self.of(ns_name)
        with self._lock:
            if status != ns.status:
                now = time.time()
                if ns.status or status:
                    ns.status_changes.append(now)
                fresh = (status.get("analysis") or {}).get("freshSince")
                if fresh and fresh != (ns.status.get("analysis") or {}).get("freshSince"):
                    self.fresh.append((now, _seconds(fresh)))
                ns.status = status
            for h in status.get("history") or []:
                ns.history[(h["time"], h["reason"], str(h.get("wave")))] = h


@dataclass(frozen=True)
class Expect:
    """What one scenario's rollout must show."""

    kind: str
    replicas: int
    max_unavailable: int
    waves: list[dict[str, Any]]
    bad: bool                    # a bad release: never promoted
    images: tuple[str, str]      # the target's image before, and after a promotion
    phases: tuple[str, ...]      # acceptable final phases
    checked_from: float          # the shop Ready: capacity is owed from here
    checked_until: float         # the rollout's deletion asked: checks end here


def judge(ns: Namespace, expect: Expect, faults: list[tuple[float, float]], final: dict[str, Any],
          image: str | None) -> tuple[list[dict[str, Any]], int]:
    """Violations of the invariants in one namespace, and how many lags a fault explained."""
    out: list[dict[str, Any]] = []
    # The history the watch saw, and the final status's own (complete up to its last 60 entries): a watch that
    # broke (an API server or etcd restart) lists again, and misses what a short rollout wrote in between.
    seen = dict(ns.history)
    for h in final.get("history") or []:
        seen.setdefault((h["time"], h["reason"], str(h.get("wave"))), h)
    history = sorted(seen.values(), key=lambda h: _seconds(h["time"]))
    # From the first sample that shows the shop fully Ready (the bench saw it so before it made the rollout):
    # the watch delivers changes in order, but late on a loaded machine, so a sample stamped after
    # checked_from may still show the shop's pods coming up. Every state after that first one is judged.
    ready = next((i for i, s in enumerate(ns.samples) if s.target_ready >= expect.replicas), None)
    samples = ([s for s in ns.samples[ready:] if s.at <= expect.checked_until] if ready is not None else
               [s for s in ns.samples if expect.checked_from <= s.at <= expect.checked_until])
    waves = [Wave.model_validate({("manual_gate" if k == "manualGate" else k): v for k, v in w.items()})
             for w in expect.waves]
    explained = 0

    def fault_between(a: float, b: float) -> bool:
        """A fault began between FAULT_LAG before `a` and `b`: a decision acted on by `a` may have lost its
        status write to it and been made again, recorded at `b`."""
        return any(a - FAULT_LAG <= start <= b + LAG for start, _ in faults)

    # Waves: per attempt, entered once each, in order, from the first.
    attempts: list[list[dict[str, Any]]] = [[]]
    for h in history:
        if h["reason"] in ATTEMPT_STARTS:
            attempts.append([])
        attempts[-1].append(h)
    for attempt in attempts:
        entered = [h["wave"] for h in attempt if h["reason"] == "WaveStarted"]
        if entered != list(range(len(entered))):
            out.append({"invariant": "each wave entered once, in order", "waves_entered": entered})
        if any(h["reason"] == "Succeeded" for h in attempt) and entered != list(range(len(waves))):
            out.append({"invariant": "every wave before success", "waves_entered": entered})

    # Paused: between an accepted pause and the next resume, no wave starts and nothing is promoted.
    paused_at: float | None = None
    for h in history:
        if h["reason"] == "RequestPause":
            paused_at = _seconds(h["time"])
        elif h["reason"] == "RequestResume":
            paused_at = None
        elif paused_at is not None and h["reason"] in ("WaveStarted", "Promoting"):
            out.append({"invariant": "nothing moves while paused", "entry": h})

    # The wave in force at a moment: the latest WaveStarted up to LAG after it (after an attempt's end the
    # canary only shrinks, so its last wave's bound still holds).
    starts = [(_seconds(h["time"]), h["wave"]) for h in history if h["reason"] == "WaveStarted"]
    total = expect.replicas
    for s in samples:
        if s.canary_ready == 0:
            continue
        share = s.canary_ready / (s.canary_ready + s.target_ready)
        before = [w for t, w in starts if t <= s.at + LAG]
        if before and share <= weight_bound(waves[before[-1]], total) + 1e-9:
            continue
        after = [(t, w) for t, w in starts if t > s.at + LAG]
        if after and share <= weight_bound(waves[after[0][1]], total) + 1e-9 and fault_between(s.at, after[0][0]):
            explained += 1
            continue
        out.append({"invariant": "canary share within its wave's bound", "at": s.at,
                    "canary_ready": s.canary_ready, "target_ready": s.target_ready,
                    "wave": before[-1] if before else None})

    # Capacity, outside the removal of a canary judged bad.
    judged_bad = final.get("rollbackReason") not in CAPACITY_FIRST
    windows = []
    for h in history:
        if h["reason"] == "RollingBack" and judged_bad:
            t0 = _seconds(h["time"])
            done = [_seconds(x["time"]) for x in history if x["reason"] == "RolledBack" and _seconds(x["time"]) >= t0]
            earlier = [start for start, _ in faults if t0 - FAULT_LAG <= start <= t0]  # a lost status write
            windows.append((min([t0 - LAG, *earlier]), (done[0] if done else expect.checked_until) + LAG))
    floor = expect.replicas - expect.max_unavailable
    for s in samples:
        if s.target_ready + s.canary_ready < floor and not any(a <= s.at <= b for a, b in windows):
            out.append({"invariant": "ready pods >= replicas - maxUnavailable", "at": s.at, "floor": floor,
                        "target_ready": s.target_ready, "canary_ready": s.canary_ready})

    # The target's template: changed only at promotion, and never to a bad release.
    promoting = [_seconds(h["time"]) for h in history if h["reason"] == "Promoting"]
    previous = samples[0].template if samples else None
    for s in samples:
        if s.template is None or s.template == previous:
            continue
        previous = s.template
        if expect.bad:
            out.append({"invariant": "a bad release never promoted", "at": s.at, "template": s.template[:300]})
        elif any(p <= s.at + LAG for p in promoting):
            continue
        elif any(p > s.at for p in promoting) and fault_between(s.at, min(p for p in promoting if p > s.at)):
            explained += 1
        else:
            out.append({"invariant": "target template changes only at promotion", "at": s.at})
    phase = final.get("phase")
    if phase not in expect.phases:
        out.append({"invariant": f"final phase in {list(expect.phases)}", "phase": phase,
                    "message": final.get("message", "")[:300]})
    if expect.bad and any(h["reason"] in ("Promoting", "Succeeded") for h in history):
        out.append({"invariant": "a bad release never promoted", "history": [h["reason"] for h in history]})
    wanted = expect.images[1] if phase == "Succeeded" else expect.images[0]
    if image != wanted:
        out.append({"invariant": "the target runs the release once promoted, else the image before",
                    "image": image, "wanted": wanted, "phase": phase})
    return out, explained
