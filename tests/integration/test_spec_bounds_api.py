"""The API server itself refuses out-of-range durations and numbers, naming the field (crds/, CEL).

`spec.analysis.interval: "0s"` was once accepted and crashed every reconcile; the CRD now refuses it
before the operator sees it. Server-side dry runs: admission and validation run, nothing is stored.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from operator_process import OperatorProcess
from rollouts import guarded_rollout
from testbed import Cluster
from waiting import eventually

WAVE = {"weight": 100, "bake": "3s"}
METRIC = {"name": "errors", "direction": "LowerIsBetter", "events": "sum(e)", "requests": "sum(r)"}


def dry_run(cluster: Cluster, namespace: str, **spec: Any) -> tuple[bool, str]:
    manifest = yaml.safe_dump(guarded_rollout("bounds", **spec))

    def attempt() -> tuple[bool, str] | None:
        proc = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest, check=False)
        if "is the operator running?" in proc.stderr:
            return None  # the API server has not yet seen the operator's new webhook address
        return proc.returncode == 0, proc.stderr

    return eventually(attempt, timeout=30, what="the API server calling the operator's admission webhook")


@pytest.mark.parametrize("spec, field, words", [
    ({"analysis": {"interval": "0s"}}, "spec.analysis.interval", "must be a duration from 1s to 1h"),
    ({"analysis": {"interval": "9999999999h"}}, "spec.analysis.interval", "must be a duration from 1s to 1h"),
    ({"analysis": {"interval": "-1s"}}, "spec.analysis.interval", "should match"),
    ({"analysis": {"preRolloutWindow": "0s"}}, "spec.analysis.preRolloutWindow", "from 10s to 168h"),
    ({"waves": [{"weight": 100, "bake": "0s"}]}, "spec.waves[0].bake", "must be a duration from 1s to 168h"),
    ({"waves": [{"weight": 100, "bake": "9999999999h"}]}, "spec.waves[0].bake", "from 1s to 168h"),
    ({"waves": [{"weight": 100, "bake": "99999999999999999999h"}]}, "spec.waves[0].bake", "from 1s to 168h"),
    ({"progressDeadline": "0s"}, "spec.progressDeadline", "must be a duration from 10s to 24h"),
    ({"progressDeadline": "2562048h"}, "spec.progressDeadline", "must be a duration from 10s to 24h"),
    ({"analysis": {"falseRollbackRate": 0}}, "spec.analysis.falseRollbackRate", "should be greater than 0"),
    ({"analysis": {"maxInconclusive": 100000}}, "spec.analysis.maxInconclusive", "less than or equal to 10000"),
    ({"analysis": {"metrics": [{**METRIC, "stableTolerance": 0}]}}, "spec.analysis.metrics[0].stableTolerance",
     "should be greater than 0"),
    ({"analysis": {"metrics": [{**METRIC, "maxRatio": 0}]}}, "spec.analysis.metrics[0].maxRatio",
     "should be greater than 0"),
    ({"analysis": {"metrics": [{**METRIC, "minRequests": 10**10}]}}, "spec.analysis.metrics[0].minRequests",
     "less than or equal to 1000000000"),
    ({"analysis": {"metrics": [{**METRIC, "direction": "HigherIsBetter", "stableTolerance": 1}]}},
     "spec.analysis.metrics[0]", "must be below 1 for HigherIsBetter"),
], ids=lambda v: str(v)[:60])
def test_the_api_server_refuses_out_of_range_values_naming_the_field(
        cluster: Cluster, namespace: str, operator: OperatorProcess, spec: dict, field: str, words: str) -> None:
    spec = {"waves": [WAVE], **spec}
    ok, stderr = dry_run(cluster, namespace, **spec)
    assert not ok, f"accepted: {spec}"
    assert field in stderr and words in stderr, stderr


def test_the_api_server_accepts_the_bounds_themselves(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    for spec in [
        {"waves": [{"weight": 100, "bake": "1s"}], "progressDeadline": "10s",
         "analysis": {"interval": "1s", "preRolloutWindow": "10s", "requests": "http_requests_total"}},
        {"waves": [{"weight": 100, "bake": "168h"}], "progressDeadline": "24h",
         "analysis": {"interval": "1h", "preRolloutWindow": "168h", "requests": "http_requests_total",
                      "metrics": [{**METRIC, "stableTolerance": 10, "maxRatio": 1, "minRequests": 10**9}]}},
        {"waves": [{"weight": 100, "bake": "1h30m0.5s"}], "progressDeadline": "0001m"},
    ]:
        ok, stderr = dry_run(cluster, namespace, **spec)
        assert ok, f"{spec}: {stderr}"
