"""Formatting primitives the plugin's views share: key-value lines, numbers, waves, the change, the
configuration it changes and the Deployments it moves (names, keys and versions only: never a Secret's data)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from guarded.api.rollout import KIND, Wave, default_waves
from guarded.core.consumers import PART_OF_LABEL
from guarded.core.waves import canary_replicas

LABEL_WIDTH = 14
PREVIEW_WIDTH = 16
CONFIG_KINDS = (("ConfigMap", "configMaps"), ("Secret", "secrets"))


def one_line(value: Any) -> str:
    """A table cell: None is empty, newlines become spaces."""
    if value is None:
        return ""
    return " ".join(str(value).split("\n")).strip()


def shorten(value: Any, width: int) -> str:
    """One line with runs of white space as one space, cut to `width` characters ending "..."."""
    text = " ".join(str("" if value is None else value).split())
    return text if len(text) <= width else text[:max(0, width - 3)].rstrip() + "..."


def spec_waves(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The waves as written, or the default ones (1 pod, 10%, 50%, 100%) when the spec has none."""
    waves = spec.get("waves")
    return list(waves) if waves else [w.to_wire() for w in default_waves()]


def documentation_label(field: str) -> str:
    """ "Rollback plan" for the spec field rollbackPlan."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", field).capitalize()


def wave_size(wave: dict[str, Any], total: int | None = None) -> str:
    """ "1 pod", "3 pods", "10%" or "10% (1 pod)" when the target's replica count is known."""
    if wave.get("replicas") is not None:
        n = wave["replicas"]
        return f"{n} pod" if n == 1 else f"{n} pods"
    text = f"{wave.get('weight')}%"
    if total:
        try:
            n = canary_replicas(Wave.model_validate(wave), total)
        except ValidationError:
            return text
        text += f" ({n} pod)" if n == 1 else f" ({n} pods)"
    return text


def _kv(label: str, value: Any, width: int = LABEL_WIDTH) -> str:
    return f"{(label + ':').ljust(width - 1)} {one_line(value)}"


def _indent(text: str, by: str = "  ") -> list[str]:
    return [by + line for line in text.splitlines()]


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def target_text(spec: dict[str, Any]) -> str:
    """ "Deployment/shop"."""
    target = spec.get("target") or {}
    return f"{target.get('kind', 'Deployment')}/{target.get('name', '?')}"


def change_summary(spec: dict[str, Any]) -> str:
    change = spec.get("change") or {}
    parts = []
    for c in change.get("containers") or []:
        bits = [f"image {c['image']}"] if c.get("image") else []
        if c.get("env"):
            bits.append(f"{len(c['env'])} env var(s)")
        parts.append(f"{c.get('name')}: {', '.join(bits) or 'unchanged'}")
    if change.get("podTemplatePatch"):
        parts.append("pod template patch")
    return "; ".join(parts)


def config_parts(spec: dict[str, Any]) -> list[str]:
    """ "ConfigMap shop-config", "Secret shop-secret": the configuration the change rolls out, by name."""
    change = spec.get("change") or {}
    return [f"{kind} {c.get('name')}" for kind, key in CONFIG_KINDS for c in change.get(key) or []]


def change_text(spec: dict[str, Any]) -> str:
    """The whole change on one line: the containers (change_summary), a whole pod template, the configuration."""
    summary = change_summary(spec)
    parts = [summary] if summary else []
    if (spec.get("change") or {}).get("template"):
        parts.append("pod template")
    return "; ".join(parts + config_parts(spec))


def config_entries(spec: dict[str, Any], status: dict[str, Any]) -> list[dict[str, Any]]:
    """Each changed ConfigMap and Secret: kind, name, its version (status.config; None until the operator made
    it), the object whose whole content is the new content (contentFrom), and a ConfigMap's keys set and
    removed. Names only: a Secret's change names another Secret, and no value is taken from anywhere."""
    versions = {(c.get("kind"), c.get("name")): c.get("version") for c in status.get("config") or []}
    change, out = spec.get("change") or {}, []
    for kind, field in CONFIG_KINDS:
        for c in change.get(field) or []:
            name = c.get("name")
            out.append({"kind": kind, "name": name, "version": versions.pop((kind, name), None),
                        "contentFrom": c.get("contentFrom"),
                        "keys": sorted(c.get("data") or {}) if kind == "ConfigMap" else [],
                        "removedKeys": list(c.get("removeKeys") or []) if kind == "ConfigMap" else []})
    out += [{"kind": kind, "name": name, "version": version, "contentFrom": None, "keys": [], "removedKeys": []}
            for (kind, name), version in versions.items()]
    return out


def consumers_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployments a shared configuration change moves (status.consumers, spec.target first); before the
    operator reported them, those spec names, each with the rollout that moves it (None: not made yet)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if status.get("consumers"):
        return [dict(c) for c in status["consumers"]]
    if not spec.get("consumers"):
        return []
    name = (obj.get("metadata") or {}).get("name")
    return [{"name": (spec.get("target") or {}).get("name"), "rollout": name},
            *({"name": c.get("name"), "rollout": None} for c in spec["consumers"])]


def part_of(meta: dict[str, Any]) -> str | None:
    """The rollout a consumer's rollout is part of: labelled part-of, named by its controlling owner (the
    label's value may be shortened to fit a label); the label's value when it has no such owner."""
    labels = meta.get("labels") or {}
    if PART_OF_LABEL not in labels:
        return None
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == KIND and o.get("controller")),
                 None)
    return str(owner.get("name")) if owner and owner.get("name") else labels[PART_OF_LABEL] or None
