"""When a judgement is due: as soon as a new interval on the common grid can be read (its end plus the
scrape lag), not an interval after the last judgement, whose phase would add up to an interval of lag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus
from guarded.core.analysis import SCRAPE_LAG_SECONDS, analysis_due, next_judgement_in
from guarded.core.clock import stamp

GRID = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)   # a multiple of every whole-second interval below


def spec(interval: str) -> GuardedRolloutSpec:
    return GuardedRolloutSpec.model_validate({
        "target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2"}]},
        "analysis": {"interval": interval, "requests": "http_requests_total", "orders": "orders_total"}})


def status(last: datetime | None) -> GuardedRolloutStatus:
    return GuardedRolloutStatus.model_validate({
        "stage": "Bake", "analysis": {"since": stamp(GRID - timedelta(minutes=1)),
                                      **({"lastAt": stamp(last)} if last else {})}})


def at(seconds: float) -> datetime:
    return GRID + timedelta(seconds=seconds)


def test_due_once_per_readable_interval_whatever_the_phase_of_the_last_judgement() -> None:
    lag = SCRAPE_LAG_SECONDS
    # Judged at 5.1 s past the grid (the interval ending at 0 s read; the one ending at 5 s not yet).
    last = at(5.1)
    assert not analysis_due(spec("5s"), status(last), at(5 + lag - 0.01))
    assert analysis_due(spec("5s"), status(last), at(5 + lag)), "the interval ending at 5 s is readable"
    # A judgement late in its interval's window (0.1 s before the next interval is readable) is followed
    # by one as soon as that interval is: no phase lag.
    late = 10 + lag - 0.1
    assert abs(next_judgement_in(stamp(at(late)), at(late), 5.0) - 0.1) < 1e-3
    # A decision that did not judge although a new interval is readable comes back at once.
    assert next_judgement_in(stamp(at(late)), at(late + 0.6), 5.0) == 0.05
    assert abs(next_judgement_in(stamp(at(5 + lag)), at(5 + lag), 5.0) - 5.0) < 1e-6
    assert abs(next_judgement_in(stamp(at(6.5 + lag)), at(6.5 + lag), 5.0) - 3.5) < 1e-6
    # Never judged yet: due now.
    assert analysis_due(spec("5s"), status(None), at(3))


def test_an_interval_off_the_grid_keeps_its_own_rhythm() -> None:
    # 1.5 s is no whole number of seconds: an interval after the last judgement.
    last = at(0.7)
    assert not analysis_due(spec("1500ms"), status(last), at(0.7 + 1.4))
    assert analysis_due(spec("1500ms"), status(last), at(0.7 + 1.45))
    assert abs(next_judgement_in(stamp(last), at(1.2), 1.5) - 1.0) < 1e-6
