"""The mixture's prior weights: they sum to 1 (Ville's bound needs no more), half on an order collapse, the
required detectable degradation's share as with uniform weights, and errors uniform."""

from __future__ import annotations

import math

import pytest

from guarded.api.analysis import Direction
from guarded.core.analysis.statistics import COLLAPSE_WEIGHT, grid, log_weights, point_cost


@pytest.mark.parametrize(("direction", "rho0", "extra"), [
    (Direction.HIGHER_IS_BETTER, 0.8, None), (Direction.HIGHER_IS_BETTER, 0.5, None),
    (Direction.HIGHER_IS_BETTER, 0.8, 0.7), (Direction.HIGHER_IS_BETTER, 0.8, 0.3),
    (Direction.HIGHER_IS_BETTER, 0.05, None), (Direction.LOWER_IS_BETTER, 1.2, None),
    (Direction.LOWER_IS_BETTER, 1.2, 1.5)])
def test_the_weights_sum_to_one(direction: Direction, rho0: float, extra: float | None) -> None:
    points = grid(direction, rho0, extra)
    weights = [math.exp(w) for w in log_weights(direction, points, extra)]
    assert len(weights) == len(points)
    assert sum(weights) == pytest.approx(1.0)
    assert all(w > 0 for w in weights)


def test_half_of_an_order_metrics_weight_is_on_the_collapse() -> None:
    points = grid(Direction.HIGHER_IS_BETTER, 0.8)
    assert points[0] == 0.01 and len(points) == 7
    weights = [math.exp(w) for w in log_weights(Direction.HIGHER_IS_BETTER, points)]
    assert weights[0] == pytest.approx(COLLAPSE_WEIGHT)
    assert weights[1:] == pytest.approx([0.5 / 6] * 6)
    # A collapse crosses ln 2 beyond log(1/alpha), not ln 7.
    assert point_cost(Direction.HIGHER_IS_BETTER, points, 0.01) == pytest.approx(math.log(2))


def test_a_required_degradation_keeps_its_uniform_share() -> None:
    points = grid(Direction.HIGHER_IS_BETTER, 0.8, 0.7)
    assert 0.7 in points and len(points) == 8
    cost = point_cost(Direction.HIGHER_IS_BETTER, points, 0.7, 0.7)
    assert cost == pytest.approx(math.log(8)), "power before promotion asks no more evidence than uniform weights"


def test_error_metrics_keep_uniform_weights() -> None:
    points = grid(Direction.LOWER_IS_BETTER, 1.2)
    assert log_weights(Direction.LOWER_IS_BETTER, points) == pytest.approx([-math.log(len(points))] * len(points))
    assert point_cost(Direction.LOWER_IS_BETTER, points, 10.0) == pytest.approx(math.log(len(points)))
