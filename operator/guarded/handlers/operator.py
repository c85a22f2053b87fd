"""kopf registrations. Thin on purpose: each handler delegates to handlers.reconcile.

Level-based, as kopf's own docs advise for serious operators: one daemon per GuardedRollout runs
observe -> decide -> act in a loop, sleeping for what the decision asks (a bake's remainder) or
until a watch event on the rollout or its Deployments wakes it. No handler chains, no progress
kept in kopf's annotations: all progress state is in .status, so a killed operator resumes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes
from aiohttp import web

from guarded import logs
from guarded.api.common import GROUP, VERSION
from guarded.api.policy import APPROVAL_PLURAL, POLICY_PLURAL
from guarded.api.rollout import PLURAL
from guarded.api.stages import Stage, phase_in, stage_in
from guarded.core.consumers import PART_OF_LABEL
from guarded.core.templates import canary_name
from guarded.handlers import alerts, endpoints, notify, telemetry, tls, webhook_server
from guarded.handlers.connection import kube_configuration, tune
from guarded.handlers.reconcile import SEEN, clean_up, reconcile
from guarded.handlers.workers import Workers
from guarded.kube.cache import WatchCache, kept
from guarded.kube.client import Conflict, KubeClient
from guarded.kube.observe import request_from
from guarded.kube.versions import Follower, Versions
from guarded.metrics.prometheus import PrometheusProvider

IDLE_SECONDS = 10.0     # re-check a quiet rollout this often even without events
# A settled rollout (`is_settled`: ended, not linked to a shared change) changes only when someone changes it or its
# Deployments, and those wake it: it is re-checked this often besides, not every IDLE_SECONDS. At N = 335, a fifth
# of the operator's busy time near the end of a run went to reading the status of rollouts that had ended (#11).
SETTLED_IDLE_SECONDS = 60.0
ERROR_BACKOFF = 2.0
RECONCILE_TIMEOUT = 90.0  # a reconcile stuck on I/O is abandoned and started again
# Reconciles under way at once, as controller-runtime's MaxConcurrentReconciles: due ones wait for a worker
# (guarded_reconcile_wait_seconds) instead of all sharing the one event loop and the I/O threads. Unbounded, a
# thousand rollouts judged on the same grid step each took tens of seconds, some past RECONCILE_TIMEOUT, and were
# started again from scratch: work thrown away when the machine could least afford it (issue 11).
RECONCILE_WORKERS = max(1, int(os.environ.get("GUARDED_RECONCILE_WORKERS", "32")))
# A rollout that waits (a gate holds it, a bake runs) is reconciled at most this often, however many
# watch events wake it: its own status write is one of them. Waves (requeue 0) are not slowed.
HELD_AFTER = 2.0          # a reconcile that asks to wait this long or longer (longer than the 1 s poll of a wave)
MIN_SPACING = 0.5         # seconds between the end of one reconcile of a held rollout and the next

# What the reconciles read instead of GETs: kopf's indexes below, one watch per kind (kube/cache.py).
CACHE = WatchCache(observer=telemetry.cache_read, kinds=("deployments", "namespaces", PLURAL, POLICY_PLURAL,
                                                         APPROVAL_PLURAL, "services", "pods"))  # serve_caches

_wakers: dict[tuple[str, str], asyncio.Event] = {}
_workers = Workers(RECONCILE_WORKERS)  # rollouts with a change out get 3 of 4 freed workers (handlers/workers.py)
_targets: dict[tuple[str, str], str] = {}
# Each rollout's last (fingerprint, phase, settled) seen.
_seen: dict[tuple[str, str], tuple[str, str | None, bool]] = {}


def busy_delay(exc: kubernetes.client.rest.ApiException, spread: float) -> float:
    """Seconds before a reconcile the API server refused with 429 runs again: its Retry-After (1 s if none),
    times 1 to 3 by `spread` (0..1), so that a thousand refused reconciles do not come back in the same
    second, and at least ERROR_BACKOFF."""
    try:
        after = float((exc.headers or {}).get("Retry-After", 1))
    except (TypeError, ValueError):
        after = 1.0
    return max(ERROR_BACKOFF, min(after, 60.0) * (1.0 + 2.0 * spread))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    tune(settings)
    api_client = kubernetes.client.ApiClient(kube_configuration())
    # The split-brain fence's version watch (kube/versions) sees every namespace: not for a namespaced operator.
    wanted = not os.environ.get("GUARDED_WATCHED_NAMESPACES") and os.environ.get("GUARDED_VERSION_WATCH", "1") != "0"
    versions = Versions(lag=telemetry.version_lag) if wanted else None
    memo.client = KubeClient(api_client, observer=telemetry.api_request, cache=CACHE, versions=versions)
    notify.configure(memo.client)  # operator-wide sinks (GUARDED_NOTIFY_*): a bad value stops the start here
    url = os.environ.get("GUARDED_PROMETHEUS_URL")
    memo.provider = PrometheusProvider(url, observer=telemetry.metric_query) if url else None
    listen = os.environ.get("GUARDED_ALERTS_LISTEN", "")
    if listen:
        host, _, port = listen.rpartition(":")
        runner = web.AppRunner(alerts.app(wake_all))
        await runner.setup()
        await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
        memo.alerts_runner = runner
    webhook_listen = os.environ.get("GUARDED_WEBHOOK_LISTEN", "")
    if webhook_listen:  # guarded.main registered the admission handlers (only then: kopf needs a server for them)
        from guarded.handlers import admission
        admission.use_client(memo.client)
        host, _, port = webhook_listen.rpartition(":")
        public = os.environ.get("GUARDED_WEBHOOK_HOST") or host or "localhost"
        cert = tls.load_or_generate(os.environ.get("GUARDED_WEBHOOK_TLS_DIR"), sorted({public, host or public}))
        server_args: dict[str, Any] = dict(addr=host or None, port=int(port), host=public,
                                           certfile=str(cert.certfile), pkeyfile=str(cert.keyfile), cadata=cert.ca)
        service = webhook_server.service_of(public)  # in a cluster: a Service reference, not a URL
        settings.admission.server = (webhook_server.ServiceWebhookServer(namespace=service[0], name=service[1],
                                                                         **server_args)
                                     if service else kopf.WebhookServer(**server_args))
        settings.admission.managed = admission.WEBHOOK_CONFIGURATION
    metrics_listen = os.environ.get("GUARDED_METRICS_LISTEN", "")
    if metrics_listen:  # /metrics and /readyz (ready once kopf has finished every startup handler)
        memo.endpoints_runner = await endpoints.serve(metrics_listen, memo.client.api_client)
    if versions is not None and memo.get("versions_follower") is None:   # last: a failed start starts none
        memo.versions_follower = Follower(api_client, versions, observer=telemetry.api_request)
        memo.versions_follower.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("versions_follower") is not None:
        memo.versions_follower.stop.set()   # its thread ends with its watch's next event, or with the process


def wake_all(*, settled_too: bool = True) -> None:
    """Wake every rollout's daemon; with settled_too=False, not those of settled rollouts (`settled`)."""
    for key, waker in list(_wakers.items()):
        if settled_too or not settled(key):
            waker.set()


def is_settled(body: dict[str, Any]) -> bool:
    """Ended by its stage (not its phase: a rollout whose spec no longer parses is Failed while it still
    restores the stable and removes its canary), and neither a parent of consumers' rollouts (their endings
    change its status) nor a consumer's rollout (it restarts when its parent does, which it learns by looking)."""
    status = body.get("status") or {}
    stage = stage_in(status)
    if stage is None or not stage.terminal:
        return False
    if (body.get("spec") or {}).get("consumers") or status.get("consumers"):
        return False
    return PART_OF_LABEL not in ((body.get("metadata") or {}).get("labels") or {})


def changing(key: tuple[str, str]) -> bool:
    """The rollout has a change out, as the watches last saw it: its status says so (a wave, a promotion, a
    rollback), or its target's canary Deployment exists (made by a decision whose status write has not been
    seen yet, or conflicted). Its reconciles wait for a worker before those of rollouts pending, held or ended."""
    obj, stage = _seen_rollout(key)
    if obj is None:
        return False
    if stage is not None and stage.active:
        return True
    return _seen_canary(obj, key[0]) is not None


def _seen_rollout(key: tuple[str, str]) -> tuple[Mapping[str, Any] | None, Stage | None]:
    """The rollout as the watch last saw it (a hint: whom to serve first), and its stage."""
    obj = CACHE.peek(PLURAL, *key)
    return obj, None if obj is None else stage_in(obj.get("status"))


def _seen_canary(rollout: Mapping[str, Any], namespace: str) -> Mapping[str, Any] | None:
    """The rollout's canary Deployment as the watch last saw it (None: none, or no target named)."""
    target = ((rollout.get("spec") or {}).get("target") or {}).get("name")
    return CACHE.peek("deployments", namespace, canary_name(target)) if isinstance(target, str) else None


def canary_ready(key: tuple[str, str]) -> bool:
    """The rollout waits for its canary's pods (stage ScaleCanary, as the watches last saw it) and its canary
    Deployment now has every pod Ready: its next reconcile starts the wave's analysis, so it presses
    (handlers/workers.py) as a wave's first judgement does."""
    obj, stage = _seen_rollout(key)
    if obj is None or stage is not Stage.SCALE_CANARY:
        return False
    canary = _seen_canary(obj, key[0])
    if canary is None:
        return False
    want, ready = (canary.get("spec") or {}).get("replicas"), (canary.get("status") or {}).get("readyReplicas")
    return isinstance(want, int) and isinstance(ready, int) and 0 < want <= ready


def restoring_or_asked(key: tuple[str, str]) -> bool:
    """As the watch last saw it, the rollout is restoring its stable (a rollback or a retire, perhaps begun by a
    replica before this one), or a user's request (abort, pause, promote) waits to be handled: its next
    reconcile presses (handlers/workers.py), and one already waiting is moved up (`rollout_changed`)."""
    obj, stage = _seen_rollout(key)
    if obj is None:
        return False
    if stage is not None and stage.cleaning:
        return True
    asked = request_from((obj.get("metadata") or {}).get("annotations"))
    return asked is not None and asked.id != (((obj.get("status") or {}).get("lastRequest") or {}).get("id"))


def settled(key: tuple[str, str]) -> bool:
    """Whether the rollout, as last seen, `is_settled`: then nothing another rollout does (a slot freed, a
    claim released) changes what it decides."""
    last = _seen.get(key)
    return last is not None and last[2]


def _wake(key: tuple[str, str]) -> None:
    """Wake the daemon of this rollout (namespace, name), if it runs here."""
    waker = _wakers.get(key)
    if waker is not None:
        waker.set()


def spacing(delay: float, since_last: float) -> float:
    """How long to hold back a reconcile woken `since_last` seconds after the previous one ended,
    which asked to wait `delay` seconds: a held rollout is not reconciled more often than MIN_SPACING."""
    if delay < HELD_AFTER:
        return 0.0
    return max(MIN_SPACING - since_last, 0.0)


# What changes on every write of status alone, the operator's own: not a reason to look again.
_VOLATILE_METADATA = ("resourceVersion", "managedFields")


def fingerprint(body: dict[str, Any]) -> str:
    """A rollout as others change it: everything but its status (only this operator writes status)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    rest = {k: v for k, v in body.items() if k not in ("metadata", "status")}
    return json.dumps([meta, rest], sort_keys=True, default=str)


def seen(key: tuple[str, str], body: dict[str, Any], deleted: bool) -> tuple[bool, bool]:
    """(wake this rollout, wake every rollout) for a watch event of a rollout.

    Its own status write does not wake a rollout again: the reconcile that wrote it knows it already,
    and waking on it made every write cause the next reconcile (and, with a message that changed each
    time, an endless stream of writes and Events). A change of its spec, metadata (annotations: requests,
    deletion) or a first sight wakes it. Every rollout but the settled ones is woken when a concurrency slot
    may have freed: a deletion, or a phase that has just become final (not on every later event of a finished
    rollout)."""
    if deleted:
        _seen.pop(key, None)
        return True, True
    status = body.get("status") or {}
    phase, known = status.get("phase"), phase_in(status)
    before = _seen.get(key)
    now = (fingerprint(body), phase, is_settled(body))
    _seen[key] = now
    changed = before is None or before[0] != now[0]
    final = known is not None and known.terminal and (before is None or before[1] != phase)
    return changed, final


# The watch caches. kopf starts no handler (so no reconcile) before each index has had its first full listing,
# and keeps them by the watches it runs anyway; the daemons hand them to the cache (kopf gives them to handlers).
@kopf.index("apps", "v1", "deployments")
async def watched_deployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): kept(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def watched_rollouts(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): kept(body)}


# What the pre-flight gates read (kube/guard.py), by namespace ("" for cluster-scoped kinds).
@kopf.index(GROUP, VERSION, POLICY_PLURAL)
async def watched_policies(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {"": kept(body)}


@kopf.index(GROUP, VERSION, APPROVAL_PLURAL)
async def watched_approvals(namespace: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {namespace: kept(body)}


@kopf.index("", "v1", "services")
async def watched_services(namespace: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {namespace: kept(body)}


@kopf.index("", "v1", "pods")
async def watched_pods(namespace: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Only what the blast radius counts (kube/guard.service_pods): a pod's labels, whether it lives; and when
    it was made (metrics/gather: a new pod's counts from zero)."""
    meta = body.get("metadata") or {}
    return {namespace: {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels", "resourceVersion",
                                                          "creationTimestamp", "deletionTimestamp") if k in meta},
                        "status": {"phase": (body.get("status") or {}).get("phase")}}}


@kopf.index("", "v1", "namespaces")
async def watched_namespaces(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {("", name): kept(body)}


def serve_caches(indexes: dict[str, kopf.Index]) -> None:
    """Hand kopf's indexes (given to handlers only) to the cache, once."""
    if CACHE.serves(PLURAL):
        return
    CACHE.serve("deployments", indexes["watched_deployments"])
    CACHE.serve("namespaces", indexes["watched_namespaces"])
    for resource, index in ((POLICY_PLURAL, "watched_policies"), (APPROVAL_PLURAL, "watched_approvals"),
                            ("services", "watched_services"), ("pods", "watched_pods")):
        CACHE.serve_lists(resource, indexes[index])
    CACHE.serve(PLURAL, indexes["watched_rollouts"])


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10.0)
async def run_rollout(namespace: str, name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo,
                      **kwargs: Any) -> None:
    serve_caches({k: v for k, v in kwargs.items() if k.startswith("watched_")})
    key = (namespace, name)
    wake = _wakers.setdefault(key, asyncio.Event())
    log = logs.logger(rollout=name, namespace=namespace, wave=None)
    loop = asyncio.get_running_loop()
    pressing = False  # the last decision said its next reconcile presses (core.judging.pressing)
    failed = False    # the last reconcile failed: it presses again only once one succeeds
    try:
        while not stopped:
            wake.clear()
            try:
                due, urgent = loop.time(), changing(key)
                pressing = pressing or canary_ready(key) or (not failed and restoring_or_asked(key))
                async with _workers.slot(urgent, pressing, key):
                    telemetry.TELEMETRY.reconcile_wait_seconds.labels(
                        str(urgent).lower(), str(pressing).lower()).observe(loop.time() - due)
                    with telemetry.reconciling():  # times it, counts the API error that failed it
                        outcome = await asyncio.wait_for(reconcile(memo.client, namespace, name, memo.provider),
                                                         timeout=RECONCILE_TIMEOUT)
                if outcome.target:
                    _targets[key] = outcome.target
                pressing, failed = outcome.pressing, False
                moved = outcome.decision is not None and not outcome.decision.status.stage.terminal
                idle = SETTLED_IDLE_SECONDS if settled(key) and not moved else IDLE_SECONDS
                delay = idle if outcome.requeue_after is None else min(outcome.requeue_after, idle)
                # Not held while this daemon waits: a decision's status was 95 KiB of models for a rollout
                # in its first wave, and the soak's memory report at N = 335 found one per rollout (issue 11).
                del outcome
            except Conflict:
                delay = 0.05  # the object moved on; decide again on fresh data (from the API server: the
                memo.client.distrust(PLURAL, namespace, name)  # watch may not have shown the move yet)
            except kubernetes.client.rest.ApiException as exc:
                pressing, failed = False, True  # a failing reconcile does not jump the queue (a 409 keeps its place)
                if exc.status != 429:
                    log.exception("reconcile failed", error=str(exc))
                    delay = ERROR_BACKOFF
                else:  # the API server sheds load: come back after its Retry-After, spread out (not all at once)
                    delay = busy_delay(exc, random.random())
                    log.warning("API server busy (429): reconciling again later", seconds=round(delay, 1))
            except Exception as exc:  # one bad reconcile must not kill the loop
                log.exception("reconcile failed", error=str(exc))
                delay, pressing, failed = ERROR_BACKOFF, False, True
            finished = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(delay, 0.05))
            hold = spacing(delay, loop.time() - finished)
            if hold > 0:  # woken early by an event; the events meanwhile are served by the next reconcile
                await asyncio.sleep(hold)
    finally:
        _wakers.pop(key, None)
        _targets.pop(key, None)
        telemetry.forget(namespace, name)  # deleted, or this replica paused: another one reports it
        SEEN.forget(key)


# Async on purpose: kopf runs sync handlers in worker threads, and asyncio.Event is not thread-safe.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def rollout_changed(namespace: str, name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    wake_self, wake_others = seen((namespace, name), body, type == "DELETED")
    if wake_self:
        _wake((namespace, name))
        if restoring_or_asked((namespace, name)):   # a user's request: a reconcile already waiting presses
            _workers.press((namespace, name))
    if wake_others:
        wake_all(settled_too=False)  # a concurrency slot may have freed up, a claim or a consumer ended


@kopf.on.event(GROUP, VERSION, APPROVAL_PLURAL)
async def approval_changed(namespace: str, body: kopf.Body, **_: Any) -> None:
    _wake((namespace, str((body.get("spec") or {}).get("rollout"))))


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL)
async def policy_changed(**_: Any) -> None:
    wake_all()


@kopf.on.event("apps", "v1", "deployments")
async def deployment_changed(namespace: str, name: str, **_: Any) -> None:
    for (ns, rollout), target in list(_targets.items()):
        if ns == namespace and name in (target, canary_name(target)):
            _wake((ns, rollout))
            # Its canary's pods just all became Ready (kopf's indexes, so the cache, are updated before this
            # handler runs): a reconcile already waiting for a worker presses from now on, not from its next turn.
            if name != target and canary_ready((ns, rollout)):
                _workers.press((ns, rollout))


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup")
async def rollout_deleted(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await clean_up(memo.client, namespace, name, dict(body))
