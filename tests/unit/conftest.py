"""Unit tests are fast: each gets 10 s (pytest-timeout) unless it says why it needs more.

The whole suite's 600 s (pyproject.toml) is for integration tests; a unit test that hangs or slows
down fails here in seconds, naming itself. A test that needs longer carries its own
`pytest.mark.timeout(...)` with a comment saying why (test_engine_properties.py does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
UNIT_TIMEOUT = 10.0  # seconds per test; the slowest plain unit test takes about 2 s on a loaded machine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))
