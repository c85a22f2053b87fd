"""The test tree itself: pytest collects tests/ as one rootdir, so two test files may not share a name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    # A folder with an __init__.py is a package: its modules are imported by their dotted name.
    loose = [p for p in TESTS.rglob("test_*.py") if not (p.parent / "__init__.py").exists()]
    names = Counter(p.name for p in loose)
    assert not {n for n, count in names.items() if count > 1}, "rename one: pytest imports them as one module"
