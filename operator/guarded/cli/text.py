"""Formatting primitives the plugin's views share: key-value lines, numbers, waves, the change."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from guarded.api.rollout import Wave, default_waves
from guarded.cli.tables import one_line
from guarded.core.waves import canary_replicas

LABEL_WIDTH = 14


PREVIEW_WIDTH = 16


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
