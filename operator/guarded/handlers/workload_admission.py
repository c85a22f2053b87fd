"""The guarded-workload webhooks: a template change of a guarded Deployment, or an edit of a ConfigMap or
Secret its pods read, is recorded as a release; what the pods read stays.

Registered only with a webhook server (kopf refuses admission handlers without one), like
handlers/admission.py. Its failurePolicy is Ignore on purpose: with the operator down, the API
server's own policy (manifests/base/workload-policy.yaml) refuses the change with a message that says
how to release, instead of "failed calling webhook"; nothing unrecorded reaches pods either way.
"""

from __future__ import annotations

from typing import Any

import kopf

from guarded.core.config_guard import admit_config_update
from guarded.core.workload_guard import GUARDED_LABEL, Refused, admit_update
from guarded.handlers.workloads import config_client, config_defaults, operator_user
from guarded.kube.config import ContentChanged
from guarded.kube.config_guard import make_version, soon


def requester(userinfo: dict[str, Any]) -> str:
    """Who asks, from the API server; refused while the operator's own identity is unknown (fail closed:
    whose change this is cannot be told yet)."""
    if operator_user() is None:
        raise kopf.AdmissionError("guarded-rollouts is starting (it does not know its own identity yet); "
                                  "try again in a few seconds", code=503)
    return str(userinfo.get("username", ""))


@kopf.on.mutate("apps", "v1", "deployments", id="guarded-deployment", operations=["UPDATE"],
                labels={GUARDED_LABEL: "true"}, persistent=True, ignore_failures=True, side_effects=False)
def guard_deployment(body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], patch: kopf.Patch,
                     warnings: list[str], **_: Any) -> None:
    if old is None:
        return
    user = requester(userinfo)
    try:
        admitted = admit_update(old=dict(old), new=dict(body), user=user, operator=user == operator_user())
    except Refused as exc:
        raise kopf.AdmissionError(str(exc), code=403) from exc
    for key, value in admitted.annotations.items():
        patch.metadata.annotations[key] = value
    if admitted.template is not None:
        template = admitted.template
        patch.fns.append(lambda b: b.setdefault("spec", {}).__setitem__("template", template))
    if admitted.note:
        warnings.append(admitted.note)


async def _guard_config(kind: str, body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any],
                        patch: kopf.Patch, warnings: list[str], dryrun: bool) -> None:
    if old is None:
        return
    user = requester(userinfo)
    try:
        admitted = admit_config_update(kind=kind, old=dict(old), new=dict(body), user=user,
                                       operator=user == operator_user())
    except Refused as exc:
        raise kopf.AdmissionError(str(exc), code=403) from exc
    if admitted.version is None or admitted.restore is None:
        return
    if not dryrun:
        client = config_client()
        try:
            await make_version(client, admitted.version, of=body.metadata.name or "")
        except ContentChanged as exc:
            raise kopf.AdmissionError(f"the edit cannot be kept as a release: {exc}", code=409) from None
        ns, name = body.metadata.namespace or "", body.metadata.name or ""
        soon(client, kind, ns, name, config_defaults(ns))
    for key, value in admitted.annotations.items():
        patch.metadata.annotations[key] = value
    restore = admitted.restore

    def put_back(b: dict[str, Any]) -> None:
        for key in ("data", "binaryData", "stringData"):
            b.pop(key, None)
        b.update({k: v for k, v in restore.items() if v})

    patch.fns.append(put_back)
    if admitted.note:
        warnings.append(admitted.note)


@kopf.on.mutate("", "v1", "configmaps", id="guarded-configmap", operations=["UPDATE"],
                labels={GUARDED_LABEL: "true"}, persistent=True, ignore_failures=True, side_effects=True)
async def guard_configmap(body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], patch: kopf.Patch,
                          warnings: list[str], dryrun: bool, **_: Any) -> None:
    await _guard_config("ConfigMap", body, old, userinfo, patch, warnings, dryrun)


@kopf.on.mutate("", "v1", "secrets", id="guarded-secret", operations=["UPDATE"],
                labels={GUARDED_LABEL: "true"}, persistent=True, ignore_failures=True, side_effects=True)
async def guard_secret(body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], patch: kopf.Patch,
                       warnings: list[str], dryrun: bool, **_: Any) -> None:
    await _guard_config("Secret", body, old, userinfo, patch, warnings, dryrun)
