"""The core never reads the clock or draws random numbers (import-linter guards imports; this guards calls)."""

from __future__ import annotations

import ast
from pathlib import Path

from testbed import ROOT

FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "random", "uuid4", "sleep"}


def test_core_and_api_call_no_clock_or_randomness() -> None:
    offenders = []
    for package in ("core", "api"):
        for path in sorted((ROOT / "operator" / "guarded" / package).glob("*.py")):
            for node in ast.walk(ast.parse(Path(path).read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in FORBIDDEN_CALLS:
                    offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
    assert offenders == []
