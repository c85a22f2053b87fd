"""Guarded configuration: an edit of a ConfigMap or Secret that guarded pods read becomes a release.

The operator labels the ConfigMaps and Secrets that guarded Deployments read (core/workload_guard.py).
An edit of one (kubectl edit, apply, replace, patch, a GitOps sync) would reach every pod at once.
Instead, the webhook keeps the content the pods read, puts the edited content into its immutable
version (`<name>-<content hash>`, core/config_refs.py), and records on the object which version was
asked for and by whom (the API server's userInfo). The operator turns that desire into a GuardedRollout
authored by the requester, whose change is the version (spec.change.configMaps[].contentFrom); the
policy's gates, the waves and the analysis decide. The object changes only at promotion, when it is
mirrored from the version (kube/config.py).

Pure: the webhook (handlers/workload_admission.py) and the shell (kube/config_guard.py) adapt it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guarded.api.common import GROUP
from guarded.core.admission import ON_BEHALF_OF
from guarded.core.config_refs import content_of, digest_of, version_labels, version_name
from guarded.core.workload_guard import DESIRED_BY, DOC_ANNOTATIONS, RELEASE, ROLLED_BACK, SOURCE, Refused, release_name

DESIRED_VERSION = f"{GROUP}/desired-version"   # the version of an edit not rolled out yet
CONFIG_DESIRE_KEYS = (DESIRED_VERSION, DESIRED_BY)


@dataclass(frozen=True)
class ConfigAdmitted:
    """What the webhook does: make `version` (a body), put `restore` back as the content, set annotations."""

    version: dict[str, Any] | None = None
    restore: dict[str, Any] | None = None
    annotations: dict[str, str | None] = field(default_factory=dict)
    note: str = ""


def admit_config_update(*, kind: str, old: Mapping[str, Any], new: Mapping[str, Any], user: str,
                        operator: bool) -> ConfigAdmitted:
    if operator:
        return ConfigAdmitted()
    meta = new.get("metadata") or {}
    name = str(meta.get("name", ""))
    before, after = content_of(kind, old), content_of(kind, new)
    old_notes = (old.get("metadata") or {}).get("annotations") or {}
    new_notes = meta.get("annotations") or {}
    if before == after:
        for key in (*CONFIG_DESIRE_KEYS, RELEASE, ROLLED_BACK):
            if new_notes.get(key) != old_notes.get(key):
                raise Refused(f"metadata.annotations[{key}] is written by guarded-rollouts only; edit the {kind}'s "
                              "content and the edit is recorded as a release")
        return ConfigAdmitted()
    if new.get("immutable") or old.get("immutable"):
        return ConfigAdmitted()  # the API server refuses the edit of an immutable object itself
    version = version_name(name, digest_of(after))
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": kind, "immutable": True, **{k: v for k, v in after.items() if v},
        "metadata": {"name": version, "namespace": meta.get("namespace"),
                     "labels": version_labels(name)},
    }
    if kind == "Secret":
        body["type"] = new.get("type") or "Opaque"
    return ConfigAdmitted(
        version=body, restore=before, annotations={DESIRED_VERSION: version, DESIRED_BY: user},
        note=f"{kind} {name!r} is read by guarded pods: its content is unchanged; the edit is kept as {version!r} "
             f"and recorded as a release by {user}, which rolls out in waves once the policy's gates pass "
             "(kubectl guarded list)")


# -- the operator's side ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigDesire:
    kind: str
    name: str
    version: str
    by: str


def config_desire_of(kind: str, obj: Mapping[str, Any]) -> ConfigDesire | None:
    a = (obj.get("metadata") or {}).get("annotations") or {}
    version, by = a.get(DESIRED_VERSION), a.get(DESIRED_BY)
    if not version or not by:
        return None
    return ConfigDesire(kind=kind, name=str(obj["metadata"]["name"]), version=version, by=by)


@dataclass(frozen=True)
class ConfigStep:
    create: dict[str, Any] | None = None
    annotate: dict[str, str | None] = field(default_factory=dict)
    supersede: str | None = None


def config_release_name(desire: ConfigDesire) -> str:
    return release_name(desire.name, desire.version.rsplit("-", 1)[-1])


def config_next_step(kind: str, obj: Mapping[str, Any], consumers: list[str],
                     rollouts: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Any]) -> ConfigStep:
    """From the object, the guarded Deployments that read it and the namespace's GuardedRollouts, what to do."""
    desire = config_desire_of(kind, obj)
    if desire is None:
        return ConfigStep()
    a = (obj.get("metadata") or {}).get("annotations") or {}
    name = config_release_name(desire)
    existing = rollouts.get(name)
    phase = ((existing or {}).get("status") or {}).get("phase")
    clear = {**dict.fromkeys(CONFIG_DESIRE_KEYS), RELEASE: None, ROLLED_BACK: None}
    if phase == "Succeeded" or version_name(desire.name, digest_of(content_of(kind, obj))) == desire.version:
        return ConfigStep(annotate=clear)   # promoted (the object mirrors it), or the same content came back
    if a.get(ROLLED_BACK, "").split(" ")[0] == desire.version:
        return ConfigStep()
    if existing is None:
        if not consumers:
            return ConfigStep()   # nothing guarded reads it any more: the edit waits for a reader or a new edit
        # Only a release made of an edit of this object is replaced: the marker is not proof of that (an
        # edit that changes the content may carry any value in it), and someone else's release is theirs.
        earlier = rollouts.get(a.get(RELEASE, ""))
        unstarted = (earlier is not None and _made_of(earlier, kind, desire.name)
                     and (earlier.get("status") or {}).get("stage", "Pending") == "Pending")
        return ConfigStep(create=config_release(obj, desire, consumers, defaults), annotate={RELEASE: name},
                          supersede=a.get(RELEASE) if unstarted and a.get(RELEASE) != name else None)
    if phase == "RolledBack":
        why = (existing.get("status") or {}).get("rollbackReason") or "rolled back"
        return ConfigStep(annotate={ROLLED_BACK: f"{desire.version} {name}: {why}; applying the same content again "
                                    "does not retry it: fix or revert the edit (or kubectl guarded retry)"})
    return ConfigStep(annotate={RELEASE: name} if a.get(RELEASE) != name else {})


def _made_of(rollout: Mapping[str, Any], kind: str, name: str) -> bool:
    """The rollout is a release made of an edit of this object (its source annotation, see config_release)."""
    source = ((rollout.get("metadata") or {}).get("annotations") or {}).get(SOURCE) or ""
    return str(source).startswith(f"{kind.lower()}/{name}@")


def config_release(obj: Mapping[str, Any], desire: ConfigDesire, consumers: list[str],
                   defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The GuardedRollout of an edit: every guarded consumer's pods move to the version, in one rollout."""
    a = (obj.get("metadata") or {}).get("annotations") or {}
    field_name = "configMaps" if desire.kind == "ConfigMap" else "secrets"
    first, *others = sorted(consumers)
    spec: dict[str, Any] = {"target": {"name": first},
                            "change": {field_name: [{"name": desire.name, "contentFrom": desire.version}]},
                            **{k: v for k, v in defaults.items() if v is not None}}
    if others:
        spec["consumers"] = [{"name": n} for n in others]
    for key, annotation in DOC_ANNOTATIONS.items():
        if annotation in a:
            spec[key] = a[annotation].strip().lower() == "true" if key == "aiAssisted" else a[annotation]
    return {
        "apiVersion": f"{GROUP}/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": config_release_name(desire), "namespace": obj["metadata"].get("namespace"),
                     "labels": {f"{GROUP}/from-apply": "true"},
                     "annotations": {ON_BEHALF_OF: desire.by,
                                     SOURCE: f"{desire.kind.lower()}/{desire.name}@{desire.version}"}},
        "spec": spec,
    }
