"""Pure formatting of tables on plain dicts: the list, the history, ages, times, JSON and YAML output.

`one_line` lives in text.py (which the change column of the list needs) and is re-exported here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from guarded.api.rollout import KIND
from guarded.cli.text import change_text, one_line, part_of, shorten  # one_line: the views import it from here too

LIST_HEADERS = ["NAME", "TARGET", "PHASE", "WAVE", "CANARY", "AGE", "MESSAGE"]
HISTORY_HEADERS = ["TIME", "WAVE", "REASON", "MESSAGE"]
CHANGE_WIDTH = 60
NESTED = "  "  # before the name of a consumer's rollout, listed under the rollout it is part of

Key = tuple[str, str]


def _cell(value: Any) -> str:
    """one_line, keeping a leading indent (a consumer's rollout under its parent in the list)."""
    text = one_line(value)
    return " " * (len(value) - len(value.lstrip(" "))) + text if isinstance(value, str) and text else text


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """kubectl's plain table: left-aligned columns, three spaces apart, the last one not padded."""
    cells = [list(headers)] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines)


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as the API writes it ("2026-01-02T03:04:05Z", optionally with a fraction)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_bound(text: str, now: datetime) -> datetime:
    """A time bound for --since/--until: RFC 3339 ("2026-03-01T12:00:00Z"; no zone means UTC), or a
    duration back from now ("24h", "7d", "1h30m"). ValueError when it is neither."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
        return now - timedelta(seconds=seconds)
    when = parse_time(value)
    if when is None:
        raise ValueError(f"{text!r} is neither an RFC 3339 time (2026-03-01T12:00:00Z) nor a duration (24h, 7d)")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def rfc3339(when: datetime) -> str:
    """As the API writes times: UTC, seconds, "Z"."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    """kubectl's short durations: 45s, 3m20s, 17m, 5h12m, 20h, 3d4h, 40d, 2y100d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years, rest = divmod(days, 365)
    return f"{years}y{rest}d" if rest and years < 8 else f"{years}y"


def age(created: str | None, now: datetime) -> str:
    when = parse_time(created)
    return "<unknown>" if when is None else human_duration((now - when).total_seconds())


def percent(value: Any) -> str:
    return "" if value is None else f"{value}%"


def is_emergency(obj: dict[str, Any]) -> bool:
    """An emergency release: asked for in its spec, or judged so by the operator (status.emergency)."""
    return bool((obj.get("spec") or {}).get("emergency") or (obj.get("status") or {}).get("emergency"))


def changes_config(obj: dict[str, Any]) -> bool:
    change = (obj.get("spec") or {}).get("change") or {}
    return bool(change.get("configMaps") or change.get("secrets"))


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def parent_in(obj: dict[str, Any], listed: dict[Key, dict[str, Any]]) -> Key | None:
    """The listed rollout this one is part of: labelled part-of and owned by it (the label alone is not
    enough: a rollout anyone writes can carry it, and the operator refuses it)."""
    meta = obj.get("metadata") or {}
    name = part_of(meta)
    key = (meta.get("namespace") or "", name or "")
    parent = listed.get(key) if name and key != _key(obj) else None
    if parent is None:
        return None
    uid = (parent.get("metadata") or {}).get("uid")
    owned = any(ref.get("kind") == KIND and ref.get("name") == name and (uid is None or ref.get("uid") == uid)
                for ref in meta.get("ownerReferences") or [])
    return key if owned else None


def nested(items: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The rollouts by namespace and name, each consumer's rollout right under the rollout it is part of
    (True: listed under its parent)."""
    ordered = sorted(items, key=_key)
    listed = {_key(o): o for o in ordered}
    parents = {_key(o): parent_in(o, listed) for o in ordered}
    under = {k: p for k, p in parents.items() if p is not None and parents.get(p) is None}
    out: list[tuple[dict[str, Any], bool]] = []
    for obj in ordered:
        if _key(obj) not in under:
            out.append((obj, False))
            out += [(listed[k], True) for k, p in under.items() if p == _key(obj)]
    return out


def list_rows(items: Iterable[tuple[dict[str, Any], bool]], now: datetime, all_namespaces: bool = False,
              emergency_column: bool = False, change_column: bool = False) -> list[list[str]]:
    rows = []
    for obj, child in items:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        row = [(NESTED if child else "") + meta.get("name", ""), (spec.get("target") or {}).get("name", ""),
               status.get("phase", ""), status.get("waveProgress", ""), percent(status.get("canaryWeight")),
               age(meta.get("creationTimestamp"), now), status.get("message", "")]
        if change_column:
            row.insert(-1, shorten(change_text(spec), CHANGE_WIDTH))
        if emergency_column:
            row.insert(3, "yes" if is_emergency(obj) else "no")
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + row)
    return rows


def list_table(items: Iterable[dict[str, Any]], now: datetime, all_namespaces: bool = False) -> str:
    """The list; an EMERGENCY column (after PHASE) appears when any listed rollout is an emergency release, a
    CHANGE column (before MESSAGE) when any changes a ConfigMap or Secret. The rollouts of a shared
    configuration change's consumers are indented under the rollout they are part of."""
    ordered = nested(items)
    emergency = any(is_emergency(o) for o, _ in ordered)
    change = any(changes_config(o) for o, _ in ordered)
    headers = list(LIST_HEADERS)
    if change:
        headers.insert(-1, "CHANGE")
    if emergency:
        headers.insert(3, "EMERGENCY")
    headers = (["NAMESPACE"] if all_namespaces else []) + headers
    return format_table(headers, list_rows(ordered, now, all_namespaces, emergency, change))


def history_rows(status: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in status.get("history") or []:
        wave = entry.get("wave")
        rows.append([entry.get("time", ""), "" if wave is None else str(wave + 1),
                     entry.get("reason", ""), entry.get("message", "")])
    return rows


def history_table(status: dict[str, Any]) -> str:
    return format_table(HISTORY_HEADERS, history_rows(status))


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What kubectl prints by default: the object without metadata.managedFields."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def as_list(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [without_managed_fields(o) for o in items],
            "metadata": {"resourceVersion": ""}}


def dump(data: Any, output: str) -> str:
    """JSON (two-space indent, like kubectl) or YAML (block style, keys in the API's order)."""
    if output == "json":
        return json.dumps(data, indent=2)
    if output == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")
    raise ValueError(f"unknown output format {output!r}")
