"""Unit tests are fast: each gets 10 s (pytest-timeout) unless it says why it needs more.

The whole suite's 600 s (pyproject.toml) is for integration tests; a unit test that hangs or slows
down fails here in seconds, naming itself. A test that needs longer carries its own
`pytest.mark.timeout(...)` with a comment saying why (test_engine_properties.py does).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
UNIT_TIMEOUT = 10.0  # seconds per test; the slowest plain unit test takes about 2 s on a loaded machine
# `make test` runs the unit tests on workers beside the cluster's journeys (4 workers, the operator, the
# API server and Prometheus on 2 cores here): a CPU-bound test then gets a fraction of a core, so its
# bound is scaled by the workers sharing the machine rather than failing on the machine's load.
SHARE = max(1.0, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) / (os.cpu_count() or 1) * 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT * SHARE))
