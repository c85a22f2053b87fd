"""Polling helpers: tests wait for observable state, never for fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.5,
               what: str = "condition") -> T:
    """Call `probe` until it returns something truthy; return that, or fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = probe()
        except AssertionError as exc:  # a probe may assert to explain itself
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last observed: {last!r}")
        time.sleep(interval)
