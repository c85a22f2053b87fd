"""Timestamps as the status stores them (RFC 3339, UTC). Formatting only: the core never reads a clock."""

from __future__ import annotations

from datetime import UTC, datetime


def stamp(moment: datetime) -> str:
    """Millisecond precision, so bake arithmetic does not drift by a rounded second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stamp_seconds(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    """A time without a zone is UTC: never the operator's local time, which would make decisions vary."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)


def seconds_between(earlier: str, now: datetime) -> float:
    return (now - parse(earlier)).total_seconds()
