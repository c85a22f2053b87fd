"""The provider interface, apart from any implementation (as Argo Rollouts keeps metric/provider.go).

Errors are data: a provider returns a result that may carry an error instead of raising, and the
judge decides what an error means (Inconclusive, never Pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Series:
    """One query's values by Unix timestamp (a single series: the query aggregates)."""

    values: dict[float, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Grouped:
    """One query's series by the value of one label (e.g. per pod), or of several joined with NUL, each by
    Unix timestamp."""

    series: dict[str, dict[float, float]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Labels:
    items: tuple[dict[str, str], ...] = ()
    error: str | None = None


class MetricProvider(Protocol):
    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series: ...

    def instant(self, query: str, *, at: datetime | None = None) -> Series: ...

    def range_by(self, query: str, label: str | tuple[str, ...], *, start: datetime, end: datetime,
                 step_seconds: float) -> Grouped:
        """A range query that returns one series per value of `label` (it aggregates `by (label)`); with
        several labels, keyed by their values joined with NUL."""
        ...

    def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
        """An instant query that returns one value per value of `label` (or of several joined with NUL)."""
        ...

    def labels(self, query: str) -> Labels:
        """Label sets of the series an instant query returns (for ALERTS)."""
        ...
