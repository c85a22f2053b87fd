"""The guarded-Deployment webhook: a template change is recorded as a release, the running template stays.

Registered only with a webhook server (kopf refuses admission handlers without one), like
handlers/admission.py. Its failurePolicy is Ignore on purpose: with the operator down, the API
server's own policy (manifests/base/workload-policy.yaml) refuses the change with a message that says
how to release, instead of "failed calling webhook"; nothing unrecorded reaches pods either way.
"""

from __future__ import annotations

from typing import Any

import kopf

from guarded.core.workload_guard import GUARDED_LABEL, Refused, admit_update
from guarded.handlers.workloads import operator_user


@kopf.on.mutate("apps", "v1", "deployments", id="guarded-deployment", operations=["UPDATE"],
                labels={GUARDED_LABEL: "true"}, persistent=True, ignore_failures=True, side_effects=False)
def guard_deployment(body: kopf.Body, old: kopf.Body | None, userinfo: dict[str, Any], patch: kopf.Patch,
                     warnings: list[str], **_: Any) -> None:
    if old is None:
        return
    user = str(userinfo.get("username", ""))
    if operator_user() is None:  # fail closed: whose change this is cannot be told yet
        raise kopf.AdmissionError("guarded-rollouts is starting (it does not know its own identity yet); "
                                  "try again in a few seconds", code=503)
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
