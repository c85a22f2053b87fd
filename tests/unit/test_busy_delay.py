"""A reconcile the API server refused with 429 comes back after its Retry-After, spread over one to three
times it, so that the rollouts it refused together do not all return in the same second."""

from __future__ import annotations

import kubernetes

from guarded.handlers.operator import ERROR_BACKOFF, busy_delay


def refused(retry_after: str | None) -> kubernetes.client.rest.ApiException:
    exc = kubernetes.client.rest.ApiException(status=429)
    exc.headers = {"Retry-After": retry_after} if retry_after is not None else None
    return exc


def test_retry_after_spread_over_one_to_three_times_it_and_never_below_the_error_backoff() -> None:
    assert busy_delay(refused("5"), 0.0) == 5.0 and busy_delay(refused("5"), 1.0) == 15.0
    assert busy_delay(refused("5"), 0.5) == 10.0
    assert busy_delay(refused("1"), 0.0) == ERROR_BACKOFF
    assert busy_delay(refused(None), 1.0) == 3.0, "no Retry-After: 1 s"
    assert busy_delay(refused("soon"), 0.0) == ERROR_BACKOFF
    assert busy_delay(refused("3600"), 0.0) == 60.0, "at most a minute"
