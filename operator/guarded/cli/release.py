"""`kubectl guarded release`: a GuardedRollout made of flags, as `kubectl argo rollouts set image` makes a change.

Pure functions of plain dicts: the flags become a manifest (`release_manifest`), the waves come from the
flags, else from the releaseDefaults of the policies that guard the target (`release_defaults`), else the
GuardedRollout's default; after creation the rollout's status says what it waits for (`waiting_lines`).
Nobody's identity is in the manifest: the operator's admission webhook stamps the authors from the API
server's authenticated user.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from guarded.api.common import GROUP, VERSION
from guarded.api.policy import DOCUMENTATION_FIELDS, RolloutPolicySpec
from guarded.api.rollout import KIND, GuardedRolloutSpec
from guarded.api.stages import Phase, phase_in
from guarded.cli.gateview import authors_of, emergency_text, gate_of
from guarded.cli.tables import one_line
from guarded.cli.text import PREVIEW_WIDTH, change_summary, documentation_label, spec_waves, target_text, wave_size
from guarded.core.templates import content_hash
from guarded.core.workload_guard import guarding

RELEASED_BY = f"{GROUP}/released-with"  # an annotation naming the tool, for people reading the object
DEFAULT_WAVES_TEXT = "the GuardedRollout default"
_WAVE = re.compile(r"^(?P<size>[0-9]+%?)(?P<rest>(:[^:]+)*)$")


class ReleaseError(ValueError):
    """A flag that cannot become a GuardedRollout: the message names the flag and what to write."""


def parse_images(values: Iterable[str]) -> dict[str, str]:
    """--image CONTAINER=IMAGE, as `kubectl set image` takes it."""
    images: dict[str, str] = {}
    for value in values:
        container, sep, image = value.partition("=")
        if not sep or not container or not image:
            raise ReleaseError(f"--image {value!r}: write CONTAINER=IMAGE (e.g. app=registry.example/shop:2.2.0)")
        if container in images:
            raise ReleaseError(f"--image: container {container!r} is given twice")
        images[container] = image
    return images


def parse_envs(values: Iterable[str], default_container: str | None) -> dict[str, list[dict[str, str]]]:
    """--env [CONTAINER:]KEY=VALUE; without CONTAINER, the only container there is to change."""
    envs: dict[str, list[dict[str, str]]] = {}
    for value in values:
        head, sep, val = value.partition("=")
        if not sep or not head:
            raise ReleaseError(f"--env {value!r}: write CONTAINER:KEY=VALUE (or KEY=VALUE for the only container)")
        container, colon, key = head.partition(":")
        if not colon:
            container, key = default_container or "", head
            if not container:
                raise ReleaseError(f"--env {value!r}: the target has several containers; write CONTAINER:KEY=VALUE")
        if not container or not key:
            raise ReleaseError(f"--env {value!r}: write CONTAINER:KEY=VALUE")
        envs.setdefault(container, []).append({"name": key, "value": val})
    return envs


def parse_wave(value: str) -> dict[str, Any]:
    """--wave SIZE[:BAKE][:gate]: SIZE is a pod count (1) or a percent (10%); e.g. 1:2m, 50%:10m:gate, 100%."""
    match = _WAVE.fullmatch(value.strip())
    if match is None:
        raise ReleaseError(f"--wave {value!r}: write SIZE[:BAKE][:gate], SIZE a pod count (1) or a percent (10%), "
                           "e.g. 1:2m, 50%:10m:gate, 100%")
    size = match["size"]
    wave: dict[str, Any] = {"weight": int(size[:-1])} if size.endswith("%") else {"replicas": int(size)}
    for part in filter(None, match["rest"].split(":")):
        if part == "gate":
            wave["manualGate"] = True
        elif "bake" not in wave:
            wave["bake"] = part
        else:
            raise ReleaseError(f"--wave {value!r}: write SIZE[:BAKE][:gate] with one bake at most, e.g. 50%:10m:gate")
    return wave


def containers_of(deployment: Mapping[str, Any]) -> list[str]:
    template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("name")) for c in template.get("containers") or []]


def change_of(images: Mapping[str, str], envs: Mapping[str, list[dict[str, str]]],
              containers: Sequence[str]) -> dict[str, Any]:
    """spec.change: one entry per container the flags change, each checked against the target's containers."""
    if not images and not envs:
        raise ReleaseError("nothing to release: give --image CONTAINER=IMAGE, --env CONTAINER:KEY=VALUE, --config NAME "
                           "or --secret NAME")
    out = []
    for name in [*images, *(c for c in envs if c not in images)]:
        if containers and name not in containers:
            raise ReleaseError(f"the target has no container {name!r} (its containers: {', '.join(containers)})")
        entry: dict[str, Any] = {"name": name}
        if name in images:
            entry["image"] = images[name]
        if envs.get(name):
            entry["env"] = envs[name]
        out.append(entry)
    return {"containers": out}


@dataclass(frozen=True)
class Defaults:
    """What a release takes from the policies: their releaseDefaults, and where they came from."""

    fields: dict[str, Any] = field(default_factory=dict)  # waves, analysis, progressDeadline (wire names)
    source: str = DEFAULT_WAVES_TEXT


def release_defaults(policies: Iterable[Mapping[str, Any]] | None, namespace_labels: Mapping[str, str] | None,
                     target_labels: Mapping[str, str], unreadable: str = "") -> Defaults:
    """The releaseDefaults of the policies that guard the target, as the operator uses them for a plain apply
    (the first policy by name that sets a field wins). None for policies the user may not read: the
    GuardedRollout's defaults then, and `unreadable` says why."""
    if policies is None:
        why = f" (RolloutPolicies not readable: {unreadable})" if unreadable else ""
        return Defaults(source=DEFAULT_WAVES_TEXT + why)
    specs: list[tuple[str, RolloutPolicySpec]] = []
    for item in policies:
        try:
            specs.append((str(item["metadata"]["name"]), RolloutPolicySpec.model_validate(item.get("spec") or {})))
        except (KeyError, ValueError):
            continue
    if namespace_labels is None:  # the namespace is not readable: only policies that do not select by it
        specs = [(n, s) for n, s in specs if not s.selector.namespace_selector.to_wire()]
    by_name = dict(specs)
    out: dict[str, Any] = {}
    used: list[str] = []
    for name in guarding(specs, namespace_labels or {}, target_labels):
        defaults = by_name[name].release_defaults
        for key, value in (defaults.to_wire() if defaults is not None else {}).items():
            if key not in out:
                out[key] = value
                if name not in used:
                    used.append(name)
    if not out:
        return Defaults()
    return Defaults(fields=out, source=f"releaseDefaults of RolloutPolicy {', '.join(used)}")


def release_name(target: str, spec: Mapping[str, Any]) -> str:
    """<target>-<hash of the spec>: the same release asked twice names the same object (created once)."""
    return f"{target[:52]}-{content_hash(spec)[:10]}"


def release_manifest(*, namespace: str, target: str, change: dict[str, Any], waves: list[dict[str, Any]] | None,
                     defaults: Defaults, description: str | None = None, ticket: str | None = None,
                     rollback_plan: str | None = None, ai_assisted: bool = False, emergency: bool = False,
                     name: str | None = None) -> dict[str, Any]:
    """The GuardedRollout to create. Explicit --wave flags win over the policies' releaseDefaults. Raises
    ReleaseError when the spec is not valid (the message names the field)."""
    spec: dict[str, Any] = {"target": {"name": target}, "change": change}
    for key, value in defaults.fields.items():
        if value is not None and not (key == "waves" and waves):
            spec[key] = value
    if waves:
        spec["waves"] = waves
    for key, value in (("description", description), ("ticket", ticket), ("rollbackPlan", rollback_plan)):
        if value:
            spec[key] = value
    if ai_assisted:
        spec["aiAssisted"] = True
    if emergency:
        spec["emergency"] = True
    try:
        GuardedRolloutSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
                             for e in exc.errors())
        raise ReleaseError(f"the release is not a valid GuardedRollout: {problems}") from None
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name or release_name(target, spec), "namespace": namespace,
                         "annotations": {RELEASED_BY: "kubectl guarded release"}},
            "spec": spec}


def _kv(label: str, value: Any) -> str:
    return f"{(label + ':').ljust(PREVIEW_WIDTH - 1)} {one_line(value)}"


def waves_text(spec: Mapping[str, Any], total: int | None = None) -> str:
    """ "1 pod (bake 2m), 50% (5 pods, bake 5m, manual gate), 100% (bake 2m)"."""
    parts = []
    for wave in spec_waves(dict(spec)):
        size = wave_size(wave, total)
        if "(" in size:  # "50% (5 pods)"
            head, _, pods = size.partition(" (")
            size, extra = head, [pods.rstrip(")")]
        else:
            extra = []
        extra.append(f"bake {wave.get('bake', '60s')}")
        if wave.get("manualGate"):
            extra.append("manual gate")
        parts.append(f"{size} ({', '.join(extra)})")
    return ", ".join(parts)


def created_lines(obj: Mapping[str, Any], *, waves_source: str, replicas: int | None = None,
                  dry_run: str | None = None, config: Sequence[tuple[str, str]] = ()) -> list[str]:
    """What `release` created: name, target, change (`config`: a line per ConfigMap and Secret it changes,
    release_config.config_facts), waves (and where they came from), documentation."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    verb = "created" if dry_run is None else f"created ({dry_run} dry run)"
    summary = change_summary(spec)
    facts = [("Target", target_text(spec)), *([("Change", summary)] if summary or not config else []), *config,
             ("Waves", f"{waves_text(spec, replicas)}  [{waves_source}]")]
    facts += [(documentation_label(key), spec[key]) for key in DOCUMENTATION_FIELDS if spec.get(key)]
    if spec.get("aiAssisted"):
        facts.append(("AI-assisted", "yes"))
    if spec.get("emergency"):
        facts.append(("Emergency", "yes (break glass)"))
    authors = authors_of(dict(obj))
    facts.append(("Authors", ", ".join(authors) if authors else "<stamped by the operator's webhook>"))
    return [f'guardedrollout/{meta.get("name")} {verb} in namespace "{meta.get("namespace")}"',
            *("  " + _kv(label, value) for label, value in facts)]


def judged(obj: Mapping[str, Any]) -> bool:
    """The operator has judged this revision: its gates are in the status, or it is past them."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    return bool(status.get("gates")) or phase_in(status) not in (Phase.PENDING, None)


def waiting_lines(obj: Mapping[str, Any], *, waited: float) -> list[str]:
    """What the release waits for now: approvals (how many, and who may not give them), the gates that
    block it, or that it is starting; read off the status the operator wrote."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    phase = status.get("phase") or "Pending"
    if not judged(obj):
        return [_kv("Phase", phase),
                _kv("Waiting for", f"the operator to judge the gates (not within {waited:g}s; is it running?); "
                                   f"kubectl guarded status {name} -n {namespace} shows them")]
    lines = [_kv("Phase", phase)]
    emergency = emergency_text(dict(obj))
    if emergency:
        lines.append(_kv("Emergency", emergency))
    known = phase_in(status)
    failing = [g for g in status.get("gates") or [] if not g.get("passed")]
    blocking = [g for g in failing if g.get("gate") != "Approvals"]
    approvals = gate_of(status, "Approvals")
    if known == Phase.BLOCKED:
        if blocking:
            lines += [_kv("Blocked by" if i == 0 else "", f"{g.get('gate')}: {g.get('message') or g.get('reason')}")
                      for i, g in enumerate(blocking)]
        else:
            lines.append(_kv("Blocked by", status.get("message") or "see kubectl guarded status"))
    if approvals is not None and not approvals.get("passed") and known is not None and known.waiting:
        message = str(approvals.get("message") or "approvals")
        lines.append(_kv("Waiting for", message.removeprefix("waiting for ")))
        authors = authors_of(dict(obj))
        who = f"someone other than {', '.join(authors)}" if authors else "someone who did not write it"
        lines.append(_kv("Approve", f"{who}: kubectl guarded approve {name} -n {namespace}"))
    elif known is not None and known.waiting and not blocking and known != Phase.BLOCKED:
        lines.append(_kv("Starting", status.get("message") or "the gates passed"))
    elif known is not None and not known.waiting:
        lines.append(_kv("Starting" if known == Phase.PROGRESSING else "Status", status.get("message") or ""))
    lines.append(f"Follow it: kubectl guarded watch {name} -n {namespace}")
    return lines
