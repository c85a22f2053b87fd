"""Configuration that rides the waves: versioned, immutable copies of the ConfigMaps and Secrets a change names.

A change of `shop-config` is never written into `shop-config` while pods read it (an edit reaches every
pod at once). Its new content goes into a copy named by its content hash, `shop-config-<10 hex>`, made
immutable, as kustomize's generators name theirs. The canary's pod template reads the copy (every
reference in volumes, projected volumes, envFrom and env valueFrom rewritten); the stable pods keep
what they read. Promotion gives the target the template that reads the copy, so rolling back a
promoted change is a reference change, and the version it replaced stays (owned by the Deployment)
for as long as the Deployment lives. A rollback, or the rollout's deletion, removes a copy that no
Deployment adopted.

The shell resolves what the new content is and whether the copies exist (kube/config.py); what to do
about them is decided here, purely. A Secret's data never enters the core: only names and hashes do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guarded.api.rollout import Change, ConfigVersion
from guarded.api.stages import Stage
from guarded.core.actions import ConfigRef, EnsureConfigVersion, RemoveConfigVersion
from guarded.core.config_refs import Key, reads, rewrite
from guarded.core.draft import Draft, Inputs
from guarded.core.observations import VersionObs
from guarded.core.templates import changed_template

# -- what the engine reads -------------------------------------------------------------------------

def changes(change: Change) -> list[tuple[str, str, str]]:
    """(kind, name, field) of every configuration change, in spec order."""
    return ([("ConfigMap", c.name, f"spec.change.configMaps[{i}]") for i, c in enumerate(change.config_maps)]
            + [("Secret", s.name, f"spec.change.secrets[{i}]") for i, s in enumerate(change.secrets)])


def versions(inp: Inputs, d: Draft) -> dict[Key, str]:
    """The versions in effect: fixed at start (status.config), else as resolved now."""
    if d.status.stage != Stage.PENDING:
        return {(c.kind, c.name): c.version for c in d.status.config}
    return {(c.kind, c.name): c.version for c in inp.obs.config if c.version}


def resolved_now(inp: Inputs) -> dict[Key, str]:
    """The versions the spec resolves to now (what a new revision will roll out)."""
    return {(c.kind, c.name): c.version for c in inp.obs.config if c.version}


def resolved(inp: Inputs) -> list[ConfigVersion]:
    return [ConfigVersion(kind=c.kind, name=c.name, version=c.version) for c in inp.obs.config if c.version]


def problem(inp: Inputs) -> str | None:
    """Why the configuration change cannot go onto the target now (names the field), or None."""
    t = inp.obs.target
    seen = {(c.kind, c.name): c for c in inp.obs.config}
    for kind, name, field in changes(inp.spec.change):
        obs = seen.get((kind, name))
        if obs is None or (obs.version is None and obs.error is None):
            return f"{field}: {kind} {name!r} not observed yet"
        if obs.error is not None:
            return f"{field}: {obs.error}"
        if t is not None and not reads(t.template, kind, name):
            return (f"{field}.name: the pod template of Deployment {t.name!r} does not read {kind} {name!r} "
                    "(volumes, envFrom or env valueFrom)")
    return None


def new_template(inp: Inputs, d: Draft, target_template: dict[str, Any], revision: str) -> dict[str, Any]:
    """The target's template with the change applied and the changed configuration's versions read."""
    return rewrite(changed_template(target_template, inp.spec.change, revision), versions(inp, d))


def version_state(inp: Inputs, version: str) -> VersionObs | None:
    return next((v for v in inp.obs.config_versions if v.version == version), None)


def ensure_versions(inp: Inputs, d: Draft) -> Draft:
    """Every version in effect exists and is owned by this rollout (or adopted by a Deployment)."""
    by_key = {(c.kind, c.name): c for c in inp.obs.config}
    for (kind, name), version in versions(inp, d).items():
        state = version_state(inp, version)
        if state is not None and state.exists and (state.ours or state.adopted):
            continue
        source = by_key.get((kind, name))
        content = source.content if source is not None and source.version == version else None
        copy_from = _content_from(inp.spec.change, kind, name)
        d = d.act(EnsureConfigVersion(kind=kind, name=name, version=version, content=content,
                                      copy_from=copy_from, rollout_name=inp.obs.name, rollout_uid=inp.obs.uid))
    return d


def _content_from(change: Change, kind: str, name: str) -> str | None:
    items = change.config_maps if kind == "ConfigMap" else change.secrets
    return next((c.content_from for c in items if c.name == name), None)


def remove_versions(inp: Inputs, d: Draft, keep: Mapping[Key, str] | None = None) -> Draft:
    """Remove the copies this rollout made that no Deployment adopted (a rollback, a retirement)."""
    # A version the spec itself names as its content (made by the plugin or by the webhook of an edit) stays
    # for a retry; the rollout's deletion takes it (its ownerReference).
    keep_names = set((keep or {}).values()) | {c.content_from for c in [*inp.spec.change.config_maps,
                                                                         *inp.spec.change.secrets] if c.content_from}
    for c in d.status.config:
        state = version_state(inp, c.version)
        if (state is None or not state.exists or not state.ours or state.adopted or state.uid is None
                or c.version in keep_names):
            continue
        d = d.act(RemoveConfigVersion(kind=c.kind, version=c.version, uid=state.uid, rollout_uid=inp.obs.uid))
    return d


def refs(inp: Inputs, d: Draft) -> tuple[ConfigRef, ...]:
    return tuple(ConfigRef(kind=k, name=n, version=v) for (k, n), v in sorted(versions(inp, d).items()))
