"""Guarded workloads: no change of a guarded Deployment's pod template reaches pods except in waves.

A RolloutPolicy with `guardWorkloads: true` guards the Deployments it selects; the operator marks
them with the GUARDED label (and the ConfigMaps and Secrets their pods read), so that the admission
webhook and the API server's own policies (manifests/base/workload-policy.yaml) apply to exactly them.

A plain change of a guarded Deployment's template (kubectl set image, set env, edit, apply, patch,
rollout undo, rollout restart) is not applied to pods: the webhook puts the running template back
and records the asked-for one, with who asked (from the API server's userInfo), in annotations. The
operator turns that recorded desire into a GuardedRollout authored by the requester; the policy's
gates, the waves and the analysis then decide. Scaling is not a change and stays free.

Pure: the shell (handlers/workloads.py) adapts kopf and the Kubernetes API to these functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guarded.api.common import GROUP
from guarded.api.policy import RolloutPolicySpec
from guarded.core.admission import ON_BEHALF_OF
from guarded.core.config_refs import references, rewrite, source_of
from guarded.core.policy import selects
from guarded.core.templates import REVISION_ANNOTATION, content_hash

GUARDED_LABEL = f"{GROUP}/guarded"               # "true" on Deployments, ConfigMaps and Secrets a policy guards
DESIRED_TEMPLATE = f"{GROUP}/desired-template"   # JSON: the pod template someone applied, not yet rolled out
DESIRED_HASH = f"{GROUP}/desired-hash"           # content hash of it (names the release)
DESIRED_BY = f"{GROUP}/desired-by"               # who applied it (the webhook stamps userInfo.username)
RELEASE = f"{GROUP}/release"                     # the GuardedRollout made of the current desire
ROLLED_BACK = f"{GROUP}/rolled-back"             # "<hash> <rollout>: why": that desire is not retried
SOURCE = f"{GROUP}/source"                       # on such a rollout: "deployment/<name>@<hash>"
# Documentation a plain apply carries as annotations on the Deployment (copied into the release).
DOC_ANNOTATIONS = {"description": f"{GROUP}/description", "ticket": f"{GROUP}/ticket",
                   "rollbackPlan": f"{GROUP}/rollback-plan", "aiAssisted": f"{GROUP}/ai-assisted"}
DESIRE_KEYS = (DESIRED_TEMPLATE, DESIRED_HASH, DESIRED_BY)

HOW_TO_RELEASE = ("release it with `kubectl guarded release {name} --image CONTAINER=IMAGE ...` or a "
                  "GuardedRollout; a plain apply is recorded as a release while the operator runs")


class Refused(Exception):
    """The change may not be admitted; the message says why and how to do it instead."""


@dataclass(frozen=True)
class Admitted:
    """What the webhook does to an admitted update: a JSON patch of the object (empty: nothing)."""

    annotations: dict[str, str | None] = field(default_factory=dict)  # None: remove
    template: dict[str, Any] | None = None                            # put this template back
    note: str = ""


def guarding(policies: Sequence[tuple[str, RolloutPolicySpec]], namespace_labels: Mapping[str, str],
             labels: Mapping[str, str]) -> list[str]:
    """Names of the policies that guard a Deployment with these labels in a namespace with those."""
    return sorted(name for name, spec in policies if spec.guard_workloads
                  and selects(spec.selector.namespace_selector, namespace_labels)
                  and selects(spec.selector.target_selector, labels))


def template_of(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(((obj or {}).get("spec") or {}).get("template") or {})


def annotations_of(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def admit_update(*, old: Mapping[str, Any], new: Mapping[str, Any], user: str, operator: bool) -> Admitted:
    """A guarded Deployment is updated. The operator's own changes (promotion, scaling a wave, its
    annotations) pass; anyone else's template change is recorded as a desire and not applied."""
    if operator:
        return Admitted()
    name = str((new.get("metadata") or {}).get("name", ""))
    old_t, new_t = template_of(old), template_of(new)
    before, after = annotations_of(old), annotations_of(new)
    # An apply that names `shop-config` where the pods read its version `shop-config-<hash>` (a GitOps tool
    # re-applying its manifest after a configuration release) keeps the version: no change by itself.
    pinned = pin_versions(new_t, old_t)
    kept = old_t if pinned != new_t else None
    new_t = pinned
    if old_t == new_t:
        for key in (*DESIRE_KEYS, RELEASE, ROLLED_BACK):
            if after.get(key) != before.get(key):
                raise Refused(f"metadata.annotations[{key}] is written by guarded-rollouts only; "
                              f"{HOW_TO_RELEASE.format(name=name)}")
        return Admitted(template=kept)
    desired_hash = content_hash(new_t)
    annotations: dict[str, str | None] = {
        DESIRED_TEMPLATE: json.dumps(new_t, sort_keys=True, separators=(",", ":")),
        DESIRED_HASH: desired_hash, DESIRED_BY: user,
    }
    return Admitted(annotations=annotations, template=old_t,
                    note=f"Deployment {name!r} is guarded: its pod template is unchanged; the change "
                         f"({desired_hash}) is recorded as a release by {user} and rolls out in waves once "
                         "the policy's gates pass (kubectl guarded list)")


def pin_versions(template: dict[str, Any], running: dict[str, Any]) -> dict[str, Any]:
    """`template` with each reference to a ConfigMap or Secret whose version the running template reads
    pointing at that version: the configuration's content changes only through its own releases."""
    pins = {(kind, source_of(ref)): ref for kind, ref in references(running) if source_of(ref) != ref}
    return rewrite(template, pins)


def admit_delete(*, old: Mapping[str, Any], operator: bool, namespace_terminating: bool) -> None:
    """Deleting a guarded Deployment would let a recreated one skip every guardrail."""
    if operator or namespace_terminating:
        return
    name = str((old.get("metadata") or {}).get("name", ""))
    raise Refused(f"Deployment {name!r} is guarded by a RolloutPolicy (label {GUARDED_LABEL}): deleting it and "
                  "creating it again would change its pods without waves or approvals; a platform admin can "
                  "lift the guard by changing the policy's selectors")


# -- the operator's side: a recorded desire becomes a GuardedRollout --------------------------------

@dataclass(frozen=True)
class Desire:
    deployment: str
    template: dict[str, Any]
    hash: str
    by: str


def desire_of(deployment: Mapping[str, Any]) -> Desire | None:
    """The recorded desire of a Deployment, if any and readable (and not already running)."""
    a = annotations_of(deployment)
    raw, digest, by = a.get(DESIRED_TEMPLATE), a.get(DESIRED_HASH), a.get(DESIRED_BY)
    if not raw or not digest or not by:
        return None
    try:
        template = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(template, dict) or content_hash(template) != digest:
        return None
    return Desire(deployment=str(deployment["metadata"]["name"]), template=template, hash=digest, by=by)


def running_hash(deployment: Mapping[str, Any]) -> str:
    """The content hash of the running template, without the revision mark a promotion adds."""
    template = template_of(deployment)
    annotations = dict((template.get("metadata") or {}).get("annotations") or {})
    if REVISION_ANNOTATION in annotations:
        del annotations[REVISION_ANNOTATION]
        metadata = {**template["metadata"], "annotations": annotations}
        if not annotations:
            del metadata["annotations"]
        template = {**template, "metadata": metadata}
    return content_hash(template)


def release_name(deployment: str, digest: str) -> str:
    """The GuardedRollout of one desire: the same content always names the same release."""
    return f"{deployment[:52]}-{digest[:10]}"


@dataclass(frozen=True)
class Step:
    """What the operator does about one guarded Deployment's desire (level-based, idempotent)."""

    create: dict[str, Any] | None = None                              # a GuardedRollout to create
    annotate: dict[str, str | None] = field(default_factory=dict)     # Deployment annotations to set/remove
    supersede: str | None = None    # an earlier release of this Deployment that never started: deleted


def next_step(deployment: Mapping[str, Any], rollouts: Mapping[str, Mapping[str, Any]],
              defaults: Mapping[str, Any]) -> Step:
    """From the Deployment and the GuardedRollouts of its namespace (by name), what to do now."""
    desire = desire_of(deployment)
    if desire is None:
        return Step()
    a = annotations_of(deployment)
    name = release_name(desire.deployment, desire.hash)
    promoted = (rollouts.get(name) or {}).get("status", {}).get("phase") == "Succeeded"
    if promoted or running_hash(deployment) == desire.hash:
        # Promoted (or the same template came back): the desire is fulfilled.
        return Step(annotate={**dict.fromkeys(DESIRE_KEYS), RELEASE: None, ROLLED_BACK: None})
    if a.get(ROLLED_BACK, "").split(" ")[0] == desire.hash:
        return Step()  # rolled back: not retried by applying the same content again
    existing = rollouts.get(name)
    if existing is None:
        # A newer change replaces an earlier one that is still waiting to start (each plain change is
        # "the running template plus this": the latest one is what the applier wants now).
        # Only a release made of a plain apply of this Deployment is replaced (its source annotation): the
        # marker alone is no proof, a template change may carry any value in it.
        earlier = rollouts.get(a.get(RELEASE, ""))
        source = str(((earlier or {}).get("metadata") or {}).get("annotations", {}).get(SOURCE) or "")
        unstarted = (earlier is not None and source.startswith(f"deployment/{desire.deployment}@")
                     and (earlier.get("status") or {}).get("stage", "Pending") == "Pending")
        return Step(create=release_manifest(deployment, desire, defaults), annotate={RELEASE: name},
                    supersede=a.get(RELEASE) if unstarted else None)
    status = existing.get("status") or {}
    if status.get("phase") == "RolledBack":
        why = status.get("rollbackReason") or "rolled back"
        return Step(annotate={ROLLED_BACK: f"{desire.hash} {name}: {why}; re-applying the same template does not "
                              "retry it: fix or revert the change (or kubectl guarded retry)"})
    return Step(annotate={RELEASE: name} if a.get(RELEASE) != name else {})


def release_manifest(deployment: Mapping[str, Any], desire: Desire, defaults: Mapping[str, Any]) -> dict[str, Any]:
    a = annotations_of(deployment)
    spec: dict[str, Any] = {"target": {"name": desire.deployment}, "change": {"template": desire.template},
                            **{k: v for k, v in defaults.items() if v is not None}}
    for field_name, key in DOC_ANNOTATIONS.items():
        if key in a:
            spec[field_name] = a[key].strip().lower() == "true" if field_name == "aiAssisted" else a[key]
    return {
        "apiVersion": f"{GROUP}/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": release_name(desire.deployment, desire.hash),
                     "namespace": deployment["metadata"].get("namespace"),
                     "labels": {f"{GROUP}/from-apply": "true"},
                     "annotations": {ON_BEHALF_OF: desire.by, SOURCE: f"deployment/{desire.deployment}@{desire.hash}"}},
        "spec": spec,
    }
