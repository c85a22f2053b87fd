"""Power before promotion on the test bed (spec.analysis.detect): with a required detectable 20% order drop,
the wave before 100% holds (Powered=False, NeedsMoreEvidence, saying how many more requests) until the
evidence could have caught such a drop; a release that drops orders 30% is rolled back before 100%, and a
healthy one is still promoted."""

from __future__ import annotations

import pytest

from operator_process import OperatorProcess
from rollouts import (
    ANALYSIS,
    Shop,
    behaviour_change,
    guarded_rollout,
    serving_shop,
    simulated_shop,
)
from story import Rollout, then, when
from testbed import Cluster

WAVES = [{"replicas": 1, "bake": "4s"}, {"weight": 50, "bake": "4s"}, {"weight": 100, "bake": "4s"}]
# Busy enough that the power a 20% drop needs comes within seconds, not the demo's quarter of an hour:
# 2000 req/s, 30% of them ordering.
ORDER_RATIO = 0.3
DETECT = {**ANALYSIS, "falseRollbackRate": 0.01, "detect": [{"metric": "orders", "degradation": 0.2}]}


@pytest.fixture
def shop(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Shop:
    body = simulated_shop()
    body["spec"]["template"]["metadata"]["annotations"].update(
        {"sim.guarded.dev/rps": "2000", "sim.guarded.dev/order-ratio": str(ORDER_RATIO)})
    return serving_shop(cluster, namespace, body)


def released(shop: Shop, name: str, patch: dict | None = None) -> Rollout:
    body = guarded_rollout(name, waves=WAVES, analysis=DETECT)
    if patch:
        body["spec"]["change"]["podTemplatePatch"] = patch
    return when.rollout_created(shop, name, body=body)


def test_a_healthy_release_holds_before_100_percent_until_the_evidence_has_the_power_then_is_promoted(
        shop: Shop) -> None:
    healthy = released(shop, "healthy")
    status = then.phase_is(healthy, "Succeeded", within=150)
    held = [h for h in status["history"] if h["reason"] == "NeedsMoreEvidence"]
    assert held and held[0]["wave"] == 1, f"the 50% wave held: {status['history']}"
    assert "order-rate:" in held[0]["message"] and "more canary requests" in held[0]["message"]
    assert "to detect a 20% drop with 95% power" in held[0]["message"]
    powered = next(c for c in status["conditions"] if c["type"] == "Powered")
    assert powered["status"] == "True" and powered["reason"] == "Powered"
    assert shop.image() == "registry.example/shop:2.0.0"


def test_a_release_that_drops_orders_30_percent_is_rolled_back_before_100_percent(shop: Shop) -> None:
    slow_burn = released(shop, "slow-burn", patch=behaviour_change(order_ratio=str(round(ORDER_RATIO * 0.7, 4))))
    status = then.phase_is(slow_burn, "RolledBack", within=150)
    assert status["rollbackReason"] == "AnalysisFailed"
    wave = next(h.get("wave") for h in status["history"] if h["reason"] == "RollingBack")
    assert wave in (0, 1), f"rolled back before the 100% wave, not in wave {wave}"
    failed = {j["metric"]: j["verdict"] for j in status["analysis"]["recent"][-1]["judgements"]}
    assert failed["order-rate"] == "Fail", failed
    assert shop.image() == "registry.example/shop:1.0.0"
