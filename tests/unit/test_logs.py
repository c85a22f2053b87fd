"""Log hygiene: the wake-up handlers' routine successes are dropped, everything else is kept."""

from __future__ import annotations

import logging

from guarded.logs import _QuietWakers


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_only_the_wakers_routine_successes_are_dropped() -> None:
    quiet = _QuietWakers()
    assert not quiet.filter(record("Handler 'rollout_changed' succeeded."))
    assert not quiet.filter(record("Handler 'deployment_changed' succeeded."))
    assert quiet.filter(record("Handler 'cleanup' succeeded."))
    assert quiet.filter(record("Handler 'rollout_changed' failed with an exception.", logging.ERROR))
