"""kopf wiring of guarded workloads (core/workload_guard.py, kube/workloads.py).

- A mutating webhook on guarded Deployments (handlers/workload_admission.py, registered with the
  webhook server) (label rollouts.guarded.dev/guarded=true) records a
  template change as a desire and keeps the running template. Its failurePolicy is Ignore on
  purpose: with the operator down the API server's own policy (manifests/base/workload-policy.yaml)
  refuses the change with a message that says how to release, instead of "failed calling webhook".
- Labels follow the policies on every policy and namespace event (a full pass) and on every Deployment
  event (that one); desires become GuardedRollouts at once on their Deployment's event, and a desire
  recorded before the operator stopped is picked up when it is back (kopf lists every Deployment then).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import kopf
import kubernetes

from guarded import logs
from guarded.api.common import GROUP, VERSION
from guarded.api.policy import POLICY_PLURAL
from guarded.api.rollout import PLURAL
from guarded.core.workload_guard import SOURCE
from guarded.kube.client import KubeClient
from guarded.kube.config_guard import release_config
from guarded.kube.workloads import (
    defaults_for,
    guard_one,
    load_policies,
    namespace_labels,
    release_desire,
    sync_guards,
)

_state: dict[str, Any] = {"client": None, "operator": None, "lock": None, "policies": None, "namespaces": {}}
_log = logs.logger()


@kopf.on.startup(id="guarded-workloads")
async def start_guarding(memo: kopf.Memo, **_: Any) -> None:
    """The API client now; the operator's own username as the API server sees it (a SelfSubjectReview)
    as soon as the API server answers, in the background, so that an unreachable API server never
    holds the operator's start (and its liveness). Until it is known the webhook admits no change."""
    client = getattr(memo, "client", None)
    if client is None:
        from guarded.handlers.connection import kube_configuration
        client = KubeClient(kubernetes.client.ApiClient(kube_configuration()))
    _state.update(client=client)
    memo.guard_identity = asyncio.create_task(_learn_identity(client))


async def _learn_identity(client: KubeClient) -> None:
    review_api = kubernetes.client.AuthenticationV1Api(client.api_client)
    while _state["operator"] is None:
        try:
            review = await client._call(review_api.create_self_subject_review,
                                        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                                        _preload_content=False)
            username = (json.loads(review.data).get("status") or {}).get("userInfo", {}).get("username")
        except Exception as exc:  # the API server is not there yet: try again
            _log.warning("cannot learn the operator's identity yet", error=str(exc))
            await asyncio.sleep(2.0)
            continue
        _state.update(operator=username)
        _log.info("guarding workloads as", operator=username)
    await sync_now()


def operator_user() -> str | None:
    return _state["operator"]


def config_client() -> KubeClient:
    return _client()


def config_defaults(namespace: str) -> Any:
    """releaseDefaults for a release of a configuration edit in this namespace (by its Deployment's labels)."""
    return defaults_for(_state["policies"] or [], _state["namespaces"].get(namespace, {}))


def _client() -> KubeClient:
    client = _state["client"]
    if client is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return client


@kopf.on.event("apps", "v1", "deployments", id="guard-deployment")
async def deployment_seen(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Every Deployment event (the initial listing included): its guard label follows the policies, and a
    recorded desire of a guarded one becomes its release at once."""
    if type == "DELETED" or _state["policies"] is None:
        return
    client = _client()
    ns = body.metadata.namespace or ""
    if ns not in _state["namespaces"]:
        _state["namespaces"] = await namespace_labels(client)
    await guard_one(client, dict(body), _state["policies"], _state["namespaces"].get(ns, {}))


@kopf.on.event(GROUP, VERSION, PLURAL, id="release-outcome", labels={f"{GROUP}/from-apply": "true"})
async def release_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A release made of a plain apply moved: its Deployment's markers follow (rolled back: not retried)."""
    if type == "DELETED" or _state["policies"] is None:
        return
    client = _client()
    ns = body.metadata.namespace or ""
    target = str((body.get("spec") or {}).get("target", {}).get("name", ""))
    source = str((body.metadata.annotations or {}).get(SOURCE, ""))
    kind, _, rest = source.partition("/")
    if kind in ("configmap", "secret"):   # an edit of configuration: its object's markers follow
        await release_config(client, "ConfigMap" if kind == "configmap" else "Secret", ns, rest.split("@")[0],
                             config_defaults(ns))
        return
    deployment = await client.get_deployment(ns, target) if target else None
    if deployment is not None:
        await release_desire(client, deployment, _state["policies"], _state["namespaces"].get(ns, {}))


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL, id="guard-on-policy")
async def policy_seen(**_: Any) -> None:
    await sync_now()


@kopf.on.event("", "v1", "namespaces", id="guard-on-namespace")
async def namespace_seen(body: kopf.Body, **_: Any) -> None:
    labels, name = dict(body.metadata.labels or {}), body.metadata.name or ""
    if _state["namespaces"].get(name) != labels:
        await sync_now(lambda: _state["namespaces"].get(name) != labels)


async def sync_now(needed: Callable[[], bool] | None = None) -> None:
    """One full pass (every Deployment, the configuration), one at a time. kopf event handlers only: they
    stop while this replica is paused (peering), and none of them writes to the policies themselves.

    `needed`: asked once this pass's turn has come; a pass that ran meanwhile may have done its work (the
    operator's start lists every namespace at once: one pass for all of them, not one each, issue 11)."""
    if _state["lock"] is None:
        _state["lock"] = asyncio.Lock()
    async with _state["lock"]:
        if needed is not None and not needed():
            return
        client = _client()
        try:
            # The per-Deployment path must judge by the same policies as this pass (set before the pass:
            # the pass's own label writes come back as Deployment events while it runs).
            _state["namespaces"] = await namespace_labels(client)
            _state["policies"] = await load_policies(client)
            await sync_guards(client, _state["policies"], _state["namespaces"])
        except Exception as exc:  # the next event tries again; every step is idempotent
            _log.warning("guard sync failed", error=str(exc))
