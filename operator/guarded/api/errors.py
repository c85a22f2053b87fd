"""Turning validation errors into messages that name the field, as a user wrote it."""

from __future__ import annotations

from pydantic import ValidationError


def field_path(loc: tuple[int | str, ...], root: str = "spec") -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            path += f".{part}"
    return path


def describe(err: ValidationError, root: str = "spec") -> str:
    parts = []
    for e in err.errors():
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(e.get("loc", ()))
        parts.append(msg if msg.startswith(root + ".") else f"{field_path(loc, root)}: {msg}")
    return "; ".join(parts)
