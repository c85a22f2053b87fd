"""kopf's settings as the operator sets them at its start."""

from __future__ import annotations

import kopf

from guarded.handlers.connection import LIST_CHUNK, tune


def test_initial_listings_come_in_pages_and_watches_and_requests_time_out() -> None:
    settings = kopf.OperatorSettings()
    assert settings.watching.chunk_size is None  # kopf's default: a whole listing in one answer
    tune(settings)
    assert settings.watching.chunk_size == LIST_CHUNK and 0 < LIST_CHUNK <= 500
    assert settings.watching.server_timeout == 120 and settings.watching.client_timeout == 150
    assert settings.networking.request_timeout == 60
    assert settings.persistence.finalizer == "rollouts.guarded.dev/finalizer"
