"""bench/judges' Kayenta-style judge: its Mann-Whitney arithmetic against hand-computed and published values.

bench/judges.py is a script, not a package module, so it is loaded from its path. The bench reports what the
judge does on thousands of rollouts; these tests pin the statistics underneath to numbers one can check by
hand (or in R), so a wrong rank or tie correction cannot hide in a table of detection times.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "judges.py"
_SPEC = importlib.util.spec_from_file_location("bench_judges", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_ties_share_their_average_rank() -> None:
    ranks, ties = bench.average_ranks(np.array([3.0, 1.0, 3.0, 2.0]))
    assert ranks.tolist() == [3.5, 1.0, 3.5, 2.0]
    assert sorted(ties.tolist()) == [1, 1, 2]


def test_separated_samples_give_u_zero_and_the_normal_p_value() -> None:
    # x = 1, 2, 3 against y = 4, 5, 6: U = 0; mean nx ny / 2 = 4.5, sd sqrt(3 * 3 * 7 / 12) = sqrt(5.25);
    # z = (0 - 4.5 + 0.5) / sqrt(5.25) = -1.74574; two-sided p = 2 Phi(-1.74574) = 0.08086
    # (R: wilcox.test(1:3, 4:6, exact = FALSE) reports W = 0, p-value = 0.08086).
    result = bench.mann_whitney(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert result["u"] == 0
    assert result["z"] == pytest.approx(-4 / math.sqrt(5.25))
    assert result["p"] == pytest.approx(0.08086, abs=1e-5)


def test_ties_reduce_the_variance() -> None:
    # x = 1, 2, 2 against y = 2, 3, 4. Ranks: 1 -> 1; the three 2s -> 3 each; 3 -> 5; 4 -> 6. Rank sum of x
    # 1 + 3 + 3 = 7, U = 7 - 6 = 1, centred 1 - 4.5 = -3.5, continuity-corrected -3.0. Tie correction
    # sum(t^3 - t) = 24 over N (N - 1) = 30: variance 9 / 12 * (7 - 0.8) = 4.65. z = -3 / sqrt(4.65).
    result = bench.mann_whitney(np.array([1.0, 2.0, 2.0]), np.array([2.0, 3.0, 4.0]))
    z = -3 / math.sqrt(4.65)
    assert result["u"] == 1
    assert result["z"] == pytest.approx(z)
    assert result["p"] == pytest.approx(2 * NormalDist().cdf(z))


def test_the_shift_interval_matches_kayentas_own_test() -> None:
    # kayenta-mannwhitney's MannWhitneySuite ("returns expected values"): control 1..4, experiment 10..40,
    # confidence 0.95 -> interval (6, 39), estimate 22.5 (the median of the 16 differences: (19 + 26) / 2).
    experiment, control = np.array([10.0, 20.0, 30.0, 40.0]), np.array([1.0, 2.0, 3.0, 4.0])
    lower, upper = bench.shift_interval(experiment, control, 0.95)
    assert lower == pytest.approx(6.0, abs=1e-6)
    assert upper == pytest.approx(39.0, abs=1e-6)
    assert bench.hodges_lehmann(experiment, control) == 22.5


def test_a_shifted_sample_is_classified_in_its_direction_only() -> None:
    rng = np.random.default_rng(7)
    control = rng.normal(0.05, 0.002, 60)
    lower = rng.normal(0.04, 0.002, 60)
    assert bench.kayenta_classify(lower, control, "decrease", 0.98) == "Low"
    assert bench.kayenta_classify(lower, control, "increase", 0.98) == "Pass"  # errors may only fail High
    assert bench.kayenta_classify(control, control, "decrease", 0.98) == "Pass"  # identical samples


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.98, 0.999])
def test_the_strength_gives_the_classification_of_every_confidence_level(confidence: float) -> None:
    """The bench computes one z-value per metric and judgement (kayenta_strength) instead of an interval per
    confidence level: the two must agree."""
    rng = np.random.default_rng(int(confidence * 1000))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    for _ in range(60):
        canary = rng.normal(rng.uniform(-1.5, 1.5), rng.uniform(0.5, 2.0), int(rng.integers(6, 40)))
        control = rng.normal(0.0, 1.0, int(rng.integers(6, 40)))
        for direction in bench.DIRECTIONS:
            failed = bench.kayenta_classify(canary, control, direction, confidence) != "Pass"
            assert failed == (bench.kayenta_strength(canary, control, direction) > z)


def test_any_failing_metric_of_two_rolls_back_below_the_marginal_score() -> None:
    z = 2.0
    strengths = np.array([[0.0, 1.0], [0.5, 2.5], [3.0, 3.0]])  # look 2: errors fail, score 50 < 75
    assert bench.kayenta_rollback(strengths, z) == 1
    assert bench.kayenta_rollback(np.zeros((3, 2)), z) is None


def test_calibration_leaves_at_most_its_budget_of_healthy_runs_rolled_back() -> None:
    rng = np.random.default_rng(3)
    measurements, looks = bench.FIXED_HORIZON // bench.CAL_PER, bench.FIXED_HORIZON // bench.CAL_KAYENTA[1]
    runs = [{"fixed": (rng.normal(1.0, 0.1, measurements), rng.normal(1.0, 0.3, measurements)),
             "kayenta": rng.normal(0.0, 1.0, (looks, 2)),
             "lost": np.zeros(measurements), "extra": np.zeros(measurements)} for _ in range(400)]
    cal = bench.calibrate(runs)
    assert cal["rolled_back_per_metric_at_most"] == 2  # 400 x 0.01 / 2
    for name, judged in bench.calibrated_runs(runs, cal).items():
        rolled_back = sum(at is not None and at <= bench.CAL_HORIZON * bench.DT for at, _, _ in judged)
        assert 0 < rolled_back <= len(runs) * bench.CAL_FRR, name
