"""Admission webhooks served by the operator: identity stamped from the API server's userInfo.

kopf serves them and keeps the MutatingWebhookConfiguration up to date. They fail
closed (failurePolicy Fail) and persist when the operator stops: with no operator to vouch for
identities, GuardedRollouts and approvals cannot be created or changed, rather than be admitted
without an author. Why a webhook and not only a ValidatingAdmissionPolicy: a policy in CEL can
refuse a forged approver (object.spec.approver != request.userInfo.username) but cannot *write*
the author into an object, and MutatingAdmissionPolicy is still beta and off by default in
Kubernetes 1.34. docs/guardrails.md has the full trade-off.

The decisions are pure functions in core/admission; this module only adapts kopf to them. What the
webhooks write is checked again after every mutation by the API server itself, with the
ValidatingAdmissionPolicies in manifests/base/identity-policy.yaml.
"""

from __future__ import annotations

from typing import Any

import kopf

from guarded.api.common import GROUP, VERSION
from guarded.api.policy import APPROVAL_PLURAL
from guarded.api.rollout import PLURAL
from guarded.core.admission import AdmissionRefused, User, approval_stamp, approved_rollout, rollout_stamp
from guarded.handlers.workloads import operator_user
from guarded.kube.client import KubeClient

WEBHOOK_CONFIGURATION = f"guarded-rollouts.{GROUP}"
_client: list[KubeClient] = []  # set at startup; admission handlers get no operator-wide memo


def use_client(client: KubeClient) -> None:
    _client[:] = [client]


@kopf.on.mutate(GROUP, VERSION, PLURAL, id="rollout-identity", operations=["CREATE", "UPDATE"], persistent=True,
                ignore_failures=False, side_effects=False)
def stamp_rollout(body: kopf.Body, old: kopf.Body | None, operation: str, userinfo: dict[str, Any],
                  patch: kopf.Patch, **_: Any) -> None:
    try:
        user = User.from_userinfo(userinfo)
        stamp = rollout_stamp(operation=operation, user=user, new=body, old=dict(old) if old is not None else None,
                              operator=user.username == operator_user())
    except AdmissionRefused as exc:
        raise kopf.AdmissionError(str(exc), code=403) from exc
    for key, value in stamp.annotations.items():
        patch.metadata.annotations[key] = value


@kopf.on.mutate(GROUP, VERSION, APPROVAL_PLURAL, id="approval-identity", operations=["CREATE", "UPDATE"],
                persistent=True, ignore_failures=False, side_effects=False)
async def stamp_approval(body: kopf.Body, old: kopf.Body | None, operation: str, userinfo: dict[str, Any],
                         patch: kopf.Patch, **_: Any) -> None:
    spec = dict(body.get("spec") or {})
    rollout = None
    try:
        name = approved_rollout(spec) if operation == "CREATE" else None
    except AdmissionRefused as exc:
        raise kopf.AdmissionError(str(exc), code=403) from exc
    if name is not None:
        if not _client:
            raise kopf.AdmissionError("the operator is still starting; try again", code=503)
        rollout = await _client[0].get_rollout(body.metadata.namespace or "", name)
    try:
        stamp = approval_stamp(operation=operation, user=User.from_userinfo(userinfo), spec=spec,
                               old_spec=dict(old.get("spec") or {}) if old is not None else None, rollout=rollout)
    except AdmissionRefused as exc:
        raise kopf.AdmissionError(str(exc), code=403) from exc
    for key, value in stamp.spec.items():
        patch.spec[key] = value
