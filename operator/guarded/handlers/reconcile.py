"""One reconcile of a GuardedRollout: observe, decide, act, persist."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf
import urllib3
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from guarded import faults, logs
from guarded.api import errors
from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import PLURAL, REQUESTER_ANNOTATION, GuardedRolloutSpec, GuardedRolloutStatus
from guarded.api.stages import Stage, stage_in
from guarded.core import conditions as cond
from guarded.core import routing
from guarded.core.actions import Action, Event
from guarded.core.analysis import AnalysisObservation
from guarded.core.clock import parse
from guarded.core.consumers import PART_OF_LABEL, part_of_value
from guarded.core.engine import Decision, decide, decide_cleanup, decide_fail_safe, needs
from guarded.core.judging import pressing
from guarded.core.observations import Claim, LinkedRollout, Observations
from guarded.core.templates import CLAIM_ANNOTATION, canary_name, parse_claim
from guarded.handlers import alerts, notify, telemetry
from guarded.handlers.fence import still_as_read
from guarded.handlers.queries import shared_queries
from guarded.kube.act import NotOwned, apply_actions
from guarded.kube.client import Conflict, KubeClient, run_query
from guarded.kube.config import observe as observe_config
from guarded.kube.events import post_events, submit_events
from guarded.kube.guard import gather as gather_guard
from guarded.kube.observe import deployment_state, request_from
from guarded.kube.patches import merge_patch
from guarded.kube.routing import observe as observe_routing
from guarded.metrics.gather import SeenIntervals, gather
from guarded.metrics.provider import MetricProvider

# The interval counts each rollout's analysis has read (metrics/gather.py): memory only, rebuilt from Prometheus.
SEEN = SeenIntervals()
# With it, each step reads only intervals not seen yet, and the built-in guards' per-pod queries, the alerts and
# the bucket bounds are shared by every rollout (metrics/shared). GUARDED_INCREMENTAL_QUERIES=0 turns both off:
# every step then reads its rollout's whole analysis, with queries of its own (docs/scale.md).
INCREMENTAL = os.environ.get("GUARDED_INCREMENTAL_QUERIES", "1") != "0"


CLEANUP_ROUNDS = 60  # at most a minute of steps undoing routing when a routed rollout is deleted
CLEANUP_PAUSE = 1.0  # seconds between two of those steps


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None
    target: str | None
    decision: Decision | None = None
    pressing: bool = False  # its next reconcile is served before every other waiting one (core.judging.pressing)


def _now() -> datetime:
    return datetime.now(UTC)


# Failures of the machinery around a reconcile: the daemon retries them, nothing is decided from them.
TRANSIENT = (Conflict, NotOwned, ApiException, urllib3.exceptions.HTTPError, OSError, TimeoutError)


async def reconcile(client: KubeClient, namespace: str, name: str,
                    provider: MetricProvider | None = None) -> Outcome:
    with telemetry.step("read"):
        obj = await client.observed_rollout(namespace, name)
        if obj is None:  # its daemon runs, so the watch has seen it: gone, or a cache to doubt; the API server says
            obj = await client.get_rollout(namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return Outcome(None, None)
    log = logs.logger(rollout=name, namespace=namespace, wave=(obj.get("status") or {}).get("waveProgress"))
    try:
        spec = GuardedRolloutSpec.model_validate(obj.get("spec") or {})
    except ValidationError as err:
        await _report_invalid_spec(client, obj, errors.describe(err))
        log.warning("invalid spec", error=errors.describe(err))
        return Outcome(None, None)
    try:
        status = GuardedRolloutStatus.model_validate(obj.get("status") or {})
    except ValidationError as err:
        log.warning("unreadable status; starting from an empty one", error=str(err))
        status = GuardedRolloutStatus()
    try:
        return await _reconcile(client, obj, spec, status, provider, log)
    except NotOwned as exc:
        log.warning("not acting on what this rollout does not own", error=str(exc))
        return Outcome(1.0, spec.target.name)
    except TRANSIENT:
        raise
    except Exception as exc:  # a bug or bad input: fail safe, then report it on the rollout
        error = describe_error(exc)
        log.exception("reconcile failed: failing safe", error=error)
        decision = await _fail_safe(client, obj, spec, status, error)
        return Outcome(2.0, spec.target.name, decision)  # not pressing: a failing reconcile does not jump the queue


def describe_error(exc: BaseException) -> str:
    """A deterministic one-line account of an exception: type, innermost guarded frame, message."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/guarded/" in f.filename]
    where = ""
    if frames:
        frame = frames[-1]
        where = f" in guarded/{frame.filename.rsplit('/guarded/', 1)[1]}:{frame.lineno} ({frame.name})"
    return f"{type(exc).__name__}{where}: {str(exc)[:300]}"


async def _observe(client: KubeClient, obj: dict[str, Any], target_name: str, *,
                   analysis: AnalysisObservation | None = None, guard: Any = None,
                   webhook_alerts: tuple[str, ...] = (), config: Any = ((), ()),
                   target: dict[str, Any] | None = None, fresh: bool = True) -> Observations:
    """What one decision sees. `fresh`: every object from the API server (the paths that restore after a
    failure share nothing with the watch cache); else from the watches where they can be trusted
    (kube/cache.py), with `target` as the reconcile already read it."""
    meta = obj["metadata"]
    namespace = meta["namespace"]
    read = client.get_deployment if fresh else client.observed_deployment
    if fresh or target is None:
        target = await read(namespace, target_name)
    resolved, versions = config
    canary = await read(namespace, canary_name(target_name))
    return Observations(
        now=_now(), namespace=namespace, name=meta["name"], uid=meta.get("uid"),
        generation=int(meta.get("generation", 1)), target=deployment_state(target), canary=deployment_state(canary),
        request=request_from(meta.get("annotations")), analysis=analysis, webhook_alerts=webhook_alerts,
        guard=guard, requester=(meta.get("annotations") or {}).get(REQUESTER_ANNOTATION),
        claim=await _claim_of(client, namespace, target, meta.get("uid"), fresh=fresh),
        config=resolved, config_versions=versions, owner_uid=_owner_uid(meta),
        parent=await _parent(client, obj, fresh=fresh), children=await _children(client, obj),
        routing=await observe_routing(client, namespace, obj, target),
    )


def _rollout_owner(meta: dict[str, Any]) -> dict[str, Any]:
    """The controller ownerReference to a GuardedRollout ({} when there is none)."""
    return next((o for o in meta.get("ownerReferences") or [] if o.get("controller")
                 and o.get("kind") == "GuardedRollout"), {})


def _owner_uid(meta: dict[str, Any]) -> str | None:
    return _rollout_owner(meta).get("uid")


def _linked(obj: dict[str, Any]) -> LinkedRollout:
    meta = obj["metadata"]
    try:
        spec: GuardedRolloutSpec | None = GuardedRolloutSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        spec = None
    try:
        status = GuardedRolloutStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = GuardedRolloutStatus()
    return LinkedRollout(name=meta["name"], uid=meta.get("uid"), owner_uid=_owner_uid(meta), spec=spec,
                         status=status, deleting=meta.get("deletionTimestamp") is not None)


async def _parent(client: KubeClient, obj: dict[str, Any], *, fresh: bool = True) -> LinkedRollout | None:
    """The rollout this one is part of (a consumer's rollout of a shared change), by its label and owner."""
    meta = obj["metadata"]
    if PART_OF_LABEL not in (meta.get("labels") or {}):
        return None
    name = str(_rollout_owner(meta).get("name") or meta["labels"][PART_OF_LABEL])
    parent = await (client.get_rollout if fresh else client.observed_rollout)(meta["namespace"], name)
    if parent is None:
        return LinkedRollout(name=name, uid=None, deleting=True)
    return _linked(parent)


async def _children(client: KubeClient, obj: dict[str, Any]) -> tuple[LinkedRollout, ...]:
    """The consumers' rollouts of a shared change this one made."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("consumers") and not status.get("consumers"):
        return ()
    meta = obj["metadata"]
    items = await client._items(client.custom.list_namespaced_custom_object, GROUP, VERSION, meta["namespace"],
                                PLURAL, label_selector=f"{PART_OF_LABEL}={part_of_value(meta['name'])}")
    return tuple(_linked(item) for item in items)


async def _claim_of(client: KubeClient, namespace: str, target: dict[str, Any] | None,
                    own_uid: str | None, *, fresh: bool = True) -> Claim | None:
    """Who holds the target; a claim is alive while the named rollout exists with that uid and has not ended."""
    value = ((target or {}).get("metadata", {}).get("annotations") or {}).get(CLAIM_ANNOTATION)
    if not value:
        return None
    parsed = parse_claim(value)
    if parsed is None:
        return Claim(value=value, name=value, uid="", alive=False)
    holder, uid = parsed
    if uid == own_uid:
        return Claim(value=value, name=holder, uid=uid, alive=True)
    other = await (client.get_rollout if fresh else client.observed_rollout)(namespace, holder)
    if other is None or other["metadata"].get("uid") != uid:
        return Claim(value=value, name=holder, uid=uid, alive=False)
    stage = stage_in(other.get("status"))
    return Claim(value=value, name=holder, uid=uid, alive=stage is None or not stage.terminal)


def _born(client: KubeClient, namespace: str) -> dict[str, float]:
    """The namespace's pods' creation times as the watch holds them (never a request of its own: a pod not
    seen is only not counted from zero, metrics/gather)."""
    if client.cache is None:
        return {}
    trusted, pods = client.cache.read_list("pods", namespace)
    born = {}
    for pod in pods if trusted else ():
        meta = pod.get("metadata") or {}
        with contextlib.suppress(KeyError, TypeError, ValueError):
            born[meta["name"]] = parse(meta["creationTimestamp"]).timestamp()
    return born


async def _reconcile(client: KubeClient, obj: dict[str, Any], spec: GuardedRolloutSpec,
                     status: GuardedRolloutStatus, provider: MetricProvider | None, log: Any) -> Outcome:
    meta = obj["metadata"]
    namespace = meta["namespace"]
    stage, wave = str(status.stage), status.wave
    faults.hit("observe", stage=stage, wave=wave, rollout=meta["name"])
    target = await client.observed_deployment(namespace, spec.target.name)
    now = _now()
    analysis_obs = None
    need = needs(spec, status, int(meta.get("generation", 1)), now)  # the core says what to observe
    if need.analysis:
        faults.hit("gather", stage=stage, wave=wave, rollout=meta["name"])
        if provider is None:
            analysis_obs = AnalysisObservation(metrics={}, alerts_error="no Prometheus configured (--prometheus-url)")
        else:
            with telemetry.step("analysis"):
                analysis_obs = await run_query(gather, provider, spec, status, namespace=namespace, now=now,
                                               memory=SEEN if INCREMENTAL else None,
                                               rollout=(namespace, meta["name"], meta.get("uid")),
                                               shared=shared_queries(provider, client.cache) if INCREMENTAL
                                               else None, born=_born(client, namespace) if INCREMENTAL else None)
    asked = request_from(meta.get("annotations"))
    new_request = asked is not None and (status.last_request is None or status.last_request.id != asked.id)
    with telemetry.step("config"):
        config = await observe_config(client, namespace, spec, status, meta.get("uid"),
                                      int(meta.get("generation", 1)), request=new_request,
                                      target_template=((target or {}).get("spec") or {}).get("template"))
    guard = None
    if target is not None and need.gates:
        with telemetry.step("guard"):
            guard = await gather_guard(client, obj=obj, spec=spec, target=target, config=config[0])
    webhook_alerts: tuple[str, ...] = ()
    if spec.analysis is not None and spec.analysis.alerts is not None:
        webhook_alerts = alerts.STORE.matching(spec.analysis.alerts.match_labels, time.time())
    with telemetry.step("observe"):
        obs = await _observe(client, obj, spec.target.name, analysis=analysis_obs, guard=guard,
                             webhook_alerts=webhook_alerts, config=config, target=target, fresh=False)
    obs = replace(obs, now=now)
    faults.hit("decide", stage=stage, wave=wave, rollout=meta["name"])
    started = time.perf_counter()
    decision = decide(spec, status, obs)
    elapsed = time.perf_counter() - started
    log = log.bind(wave=decision.status.wave_progress)
    if decision.actions:
        log.info("acting", actions=[type(a).__name__ for a in decision.actions], stage=str(decision.status.stage))
        faults.hit("act", stage=str(decision.status.stage), wave=decision.status.wave, rollout=meta["name"])
    with telemetry.step("act"):
        await apply_actions(client, namespace, decision.actions, fence=still_as_read(client, obj))
    faults.hit("persist", stage=str(decision.status.stage), wave=decision.status.wave, rollout=meta["name"])
    with telemetry.step("persist"):
        await _persist(client, obj, status, decision, log)
    telemetry.record(obs, status, decision, elapsed)  # after the write: a conflicted decision never counts
    log.debug("decided", seconds=round(elapsed, 6))
    return Outcome(decision.requeue_after, spec.target.name, decision, pressing(spec, decision.status))


async def _persist(client: KubeClient, obj: dict[str, Any], status: GuardedRolloutStatus, decision: Decision,
                   log: Any) -> None:
    """Write the decision's status (only when it changed; a 409 propagates), then its notifications and Events."""
    wrote = await _write_status(client, obj, status, decision.status)  # Conflict propagates: decide again
    meta = obj["metadata"]
    if wrote and PART_OF_LABEL not in (meta.get("labels") or {}):  # a consumer's rollout is told by its parent's
        # The write claimed these transitions (compare-and-swap): sent once, by this replica, never awaited.
        notify.submit(namespace=meta["namespace"], name=meta["name"],
                      target=str(((obj.get("spec") or {}).get("target") or {}).get("name")),
                      before=status, after=decision.status)
    if decision.events:
        submit_events(client, obj, decision.events)  # in the background: the reconcile does not wait for them
        for event in decision.events:
            log.info(event.message, reason=event.reason, type=event.type, phase=str(decision.status.phase))


async def _write_status(client: KubeClient, obj: dict[str, Any], before: GuardedRolloutStatus,
                        after: GuardedRolloutStatus) -> bool:
    """Make the status of `obj` `after`, unless it is `before` unchanged: a merge patch of only what differs
    from the status as read, guarded by the read resourceVersion (a 409 raises Conflict); whether it wrote."""
    if after == before:
        return False
    meta = obj["metadata"]
    change = merge_patch(obj.get("status") or {}, after.to_wire())
    if not change:
        return False
    await client.patch_rollout_status(meta["namespace"], meta["name"], {
        "metadata": {"resourceVersion": meta["resourceVersion"]}, "status": change})
    return True


async def _fail_safe(client: KubeClient, obj: dict[str, Any], spec: GuardedRolloutSpec,
                     status: GuardedRolloutStatus, error: str) -> Decision | None:
    """Restore what a failed reconcile may have left half-changed, and say so on the rollout.

    Built from a fresh observation with none of the steps that failed (no analysis, no gates), so
    the restoring path shares as little as possible with the one that broke."""
    obs = await _observe(client, obj, spec.target.name)
    decision = decide_fail_safe(spec, status, obs, error)
    await apply_actions(client, obs.namespace, decision.actions, fence=still_as_read(client, obj))
    log = logs.logger(rollout=obs.name, namespace=obs.namespace, wave=decision.status.wave_progress)
    try:
        await _persist(client, obj, status, decision, log)
    except Conflict:
        return None  # the object moved on: the next reconcile decides again
    return decision


async def _report_invalid_spec(client: KubeClient, obj: dict[str, Any], message: str) -> None:
    try:
        status = GuardedRolloutStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = GuardedRolloutStatus()
    now = _now()
    update: dict[str, Any] = {}
    target_name = ((obj.get("spec") or {}).get("target") or {}).get("name")
    if (status.stage.in_wave or status.stage.cleaning) and isinstance(target_name, str):
        # A spec that cannot be read mid-rollout (written under an older, looser schema): no wave can be
        # judged or sized from it, so fail safe: remove the canary and give the stable its pods back.
        obs = await _observe(client, obj, target_name)
        t = obs.target
        restored = t is not None and t.replicas == status.stable_replicas and (t.available >= t.replicas)
        await apply_actions(client, obs.namespace, decide_cleanup(status, obs, restore=True, release=False,
                                                                  remove_canary=restored))
        if status.stage.in_wave:
            update = {"stage": Stage.ROLLING_BACK, "rollback_reason": "InvalidSpec", "paused": False}
    conditions = cond.set_condition(status.conditions, type=cond.VALID, status=False, reason="InvalidSpec",
                                    message=message, now=now, generation=obj["metadata"].get("generation"))
    new = status.model_copy(update={"conditions": conditions, "phase": cond.derive_phase(conditions),
                                    "message": message, "observed_generation": obj["metadata"].get("generation"),
                                    **update})
    try:
        if not await _write_status(client, obj, status, new):
            return
    except Conflict:
        return
    await post_events(client, obj, (Event(type="Warning", reason="InvalidSpec", message=message),))


async def clean_up(client: KubeClient, namespace: str, name: str, body: dict[str, Any]) -> None:
    """The GuardedRollout is being deleted: remove its canary and give the stable its pods back."""
    try:
        spec = GuardedRolloutSpec.model_validate(body.get("spec") or {})
        status = GuardedRolloutStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return
    obs = await _observe(client, body, spec.target.name)
    actions: tuple[Action, ...] = ()
    for _ in range(CLEANUP_ROUNDS):
        more = decide_cleanup(status, obs)
        await apply_actions(client, namespace, more)
        actions += more
        if routing.undone(status, obs) and not (more and routing.in_force(status, obs) is not None):
            break
        # Routed by weight, undoing takes steps (weight 0, the canary gone, then the route, the canary Service
        # and the stable's selector as they were), each on what the one before left; a step may decide nothing
        # while the canary's pods terminate (foreground deletion), which is not the end.
        await asyncio.sleep(CLEANUP_PAUSE)
        obs = await _observe(client, body, spec.target.name)
    else:
        # The finalizer stays and kopf calls this again: a rollout gone while the stable Service is still
        # pinned to the old pods would leave it so forever.
        raise kopf.TemporaryError(f"routing not yet undone after {CLEANUP_ROUNDS} rounds (the canary Deployment "
                                  f"{'is still there' if obs.canary is not None else 'is gone'}); trying again",
                                  delay=10)
    logs.logger(rollout=name, namespace=namespace, wave=status.wave_progress).info(
        "deleted: cleaned up", actions=[type(a).__name__ for a in actions])
