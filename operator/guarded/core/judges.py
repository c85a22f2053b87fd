"""Moved: the judges are guarded.core.analysis.statistics (import them from guarded.core.analysis).

Kept only while tests/unit/test_engine_analysis.py imports this module; delete it with that import."""

from guarded.core.analysis import Counts, Direction, JudgeConfig, MetricData, Verdict, judge

__all__ = ["Counts", "Direction", "JudgeConfig", "MetricData", "Verdict", "judge"]
