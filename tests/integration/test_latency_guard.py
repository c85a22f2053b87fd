"""The latency guard on the test bed: a release that triples latency, with errors and orders unchanged,
is rolled back in its first or second wave by the share of slow requests (spec.analysis.latency); a
threshold that is no bucket bound holds the wave and says which field to fix."""

from __future__ import annotations

import pytest

from operator_process import OperatorProcess
from rollouts import (
    ANALYSIS,
    Shop,
    behaviour_change,
    guarded_rollout,
    serving_shop,
)
from story import Rollout, then, when
from testbed import Cluster
from waiting import eventually

WAVES = [{"replicas": 1, "bake": "8s"}, {"weight": 50, "bake": "6s"}, {"weight": 100, "bake": "6s"}]
# The simulator's histogram has a bucket at 0.25 s; its latencies are exponential with mean latency-ms.
# At 40 ms 0.2% of requests are slower than 250 ms; at 120 ms (p99 tripled, 184 ms to 553 ms) 12.5% are.
LATENCY = {"histogram": "http_request_duration_seconds", "threshold": "250ms"}


@pytest.fixture
def shop(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Shop:
    return serving_shop(cluster, namespace)


def released(shop: Shop, name: str, *, latency: dict, patch: dict | None = None, **analysis: object) -> Rollout:
    body = guarded_rollout(name, waves=WAVES, analysis={**ANALYSIS, "latency": latency, **analysis})
    if patch:
        body["spec"]["change"]["podTemplatePatch"] = patch
    return when.rollout_created(shop, name, body=body)


def test_a_release_that_triples_latency_with_errors_and_orders_unchanged_is_rolled_back_by_the_latency_guard(
        shop: Shop) -> None:
    slow = released(shop, "slow", latency=LATENCY, patch=behaviour_change(latency_ms="120"))
    status = then.phase_is(slow, "RolledBack", within=120)
    assert status["rollbackReason"] == "AnalysisFailed"
    wave = next(h.get("wave") for h in status["history"] if h["reason"] == "RollingBack")
    assert wave in (0, 1), f"caught in its first or second wave, not wave {wave}"
    failed = status["analysis"]["recent"][-1]
    verdicts = {j["metric"]: j["verdict"] for j in failed["judgements"]}
    assert verdicts["slow-request-rate"] == "Fail", verdicts
    assert verdicts["order-rate"] != "Fail" and verdicts["error-rate"] != "Fail", verdicts
    latency = next(j for j in failed["judgements"] if j["metric"] == "slow-request-rate")
    failing = [e for e in latency["evidence"] if e["verdict"] == "Fail"]
    assert failing and failing[0]["canaryRatio"] > 5 * failing[0]["referenceRatio"], failing
    warning = [e for e in slow.events() if e.reason == "RollingBack"]
    assert warning and "slow-request-rate" in warning[0].message
    assert shop.deployment("shop-canary") is None and shop.image() == "registry.example/shop:1.0.0"


def test_a_threshold_that_is_no_bucket_bound_holds_the_wave_naming_the_field(shop: Shop) -> None:
    odd = released(shop, "odd-threshold", latency={**LATENCY, "threshold": "300ms"}, onInconclusive="Hold")

    def holding() -> str | None:
        status = odd.status() or {}
        recent = status.get("analysis", {}).get("recent", [])
        latency = [j for r in recent[-1:] for j in r["judgements"] if j["metric"] == "slow-request-rate"]
        return latency[0]["reason"] if latency and latency[0]["verdict"] == "Inconclusive" else None

    reason = eventually(holding, timeout=45, what="the latency guard's judgement")
    assert "spec.analysis.latency.threshold 300ms is no bucket bound of http_request_duration_seconds" in reason
    assert "0.25" in reason and "0.5" in reason
    status = odd.status()
    assert status["wave"] == 0 and status["phase"] != "Succeeded"
    assert any("spec.analysis.latency.threshold" in h["message"] for h in status["history"]
               if h["reason"] == "AnalysisInconclusive")
