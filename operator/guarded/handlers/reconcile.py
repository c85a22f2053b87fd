"""One reconcile of a GuardedRollout: observe, decide, act, persist."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from guarded import logs
from guarded.api import errors
from guarded.api.rollout import REQUESTER_ANNOTATION, GuardedRolloutSpec, GuardedRolloutStatus, Stage
from guarded.core import conditions as cond
from guarded.core.analysis import AnalysisObservation, analysis_due
from guarded.core.engine import Decision, decide, decide_cleanup
from guarded.core.model import Event, Observations
from guarded.core.templates import canary_name
from guarded.handlers import alerts, telemetry
from guarded.kube.act import apply_actions
from guarded.kube.client import Conflict, KubeClient
from guarded.kube.events import post_events
from guarded.kube.guard import gather as gather_guard
from guarded.kube.observe import deployment_state, request_from
from guarded.metrics.gather import gather
from guarded.metrics.provider import MetricProvider


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None
    target: str | None
    decision: Decision | None = None


def _now() -> datetime:
    return datetime.now(UTC)


async def reconcile(client: KubeClient, namespace: str, name: str,
                    provider: MetricProvider | None = None) -> Outcome:
    obj = await client.get_rollout(namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return Outcome(None, None)
    meta = obj["metadata"]
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

    target = await client.get_deployment(namespace, spec.target.name)
    canary = await client.get_deployment(namespace, canary_name(spec.target.name))
    now = _now()
    analysis_obs = None
    if analysis_due(spec, status, now):
        if provider is None:
            analysis_obs = AnalysisObservation(metrics={}, alerts_error="no Prometheus configured (--prometheus-url)")
        else:
            analysis_obs = await asyncio.to_thread(gather, provider, spec, status, namespace=namespace, now=now)
    guard = None
    if target is not None and (status.stage == Stage.PENDING or status.observed_generation != meta.get("generation")):
        guard = await gather_guard(client, obj=obj, spec=spec, target=target)
    webhook_alerts: tuple[str, ...] = ()
    if spec.analysis is not None and spec.analysis.alerts is not None:
        webhook_alerts = alerts.STORE.matching(spec.analysis.alerts.match_labels, time.time())
    obs = Observations(
        now=now, namespace=namespace, name=name, uid=meta.get("uid"), generation=int(meta.get("generation", 1)),
        target=deployment_state(target), canary=deployment_state(canary),
        request=request_from(meta.get("annotations")), analysis=analysis_obs, webhook_alerts=webhook_alerts,
        guard=guard, requester=(meta.get("annotations") or {}).get(REQUESTER_ANNOTATION),
    )
    started = time.perf_counter()
    decision = decide(spec, status, obs)
    elapsed = time.perf_counter() - started
    log = log.bind(wave=decision.status.wave_progress)
    if decision.actions:
        log.info("acting", actions=[type(a).__name__ for a in decision.actions], stage=str(decision.status.stage))
    await apply_actions(client, namespace, decision.actions)
    if decision.status != status:
        body = {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": meta["resourceVersion"]},
            "spec": obj["spec"],
            "status": decision.status.to_wire(),
        }
        await client.replace_rollout_status(body)  # Conflict propagates: decide again on fresh data
    telemetry.record(obs, status, decision, elapsed)  # after the write: a conflicted decision never counts
    if decision.events:
        await post_events(client, obj, decision.events)
        for event in decision.events:
            log.info(event.message, reason=event.reason, type=event.type, phase=str(decision.status.phase))
    log.debug("decided", seconds=round(elapsed, 6))
    return Outcome(decision.requeue_after, spec.target.name, decision)


async def _report_invalid_spec(client: KubeClient, obj: dict[str, Any], message: str) -> None:
    try:
        status = GuardedRolloutStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = GuardedRolloutStatus()
    now = _now()
    conditions = cond.set_condition(status.conditions, type=cond.VALID, status=False, reason="InvalidSpec",
                                    message=message, now=now, generation=obj["metadata"].get("generation"))
    new = status.model_copy(update={"conditions": conditions, "phase": cond.derive_phase(conditions),
                                    "message": message, "observed_generation": obj["metadata"].get("generation")})
    if new == status:
        return
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                         "resourceVersion": obj["metadata"]["resourceVersion"]},
            "spec": obj["spec"], "status": new.to_wire()}
    try:
        await client.replace_rollout_status(body)
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
    target = await client.get_deployment(namespace, spec.target.name)
    canary = await client.get_deployment(namespace, canary_name(spec.target.name))
    obs = Observations(now=_now(), namespace=namespace, name=name, uid=body["metadata"].get("uid"),
                       generation=int(body["metadata"].get("generation", 1)), target=deployment_state(target),
                       canary=deployment_state(canary))
    actions = decide_cleanup(status, obs)
    await apply_actions(client, namespace, actions)
    logs.logger(rollout=name, namespace=namespace, wave=status.wave_progress).info(
        "deleted: cleaned up", actions=[type(a).__name__ for a in actions])
