"""bench/chaos, bounded: every fault kind at least once while rollouts of every kind run, judged from outside.

The full bench (`make bench-chaos`, docs/chaos.md) runs 200 kills and every other fault ten times; this is
the subset CI runs on every change: a few kills, and one of each other kind (the API server and etcd
restarted, the operator cut from the API server, Prometheus stopped, slow or resetting, the active replica
frozen past its lease), with three rollouts in flight. Its watcher's invariants (capacity, the canary's
bound, waves entered once, pauses kept, the target changed only at promotion, outcomes, approvals, nothing
left behind) must all hold, and every rollout must end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from operator_process import OperatorProcess
from testbed import ROOT, Cluster

pytestmark = pytest.mark.exclusive  # it runs operators of its own and restarts the control plane

FAULTS = {"operator-sigkill": 4, "apiserver-restart": 1, "etcd-restart": 1, "api-cut": 1, "prometheus-outage": 1,
          "prometheus-slow": 1, "active-replica-sigstop": 1}


@pytest.fixture
def bench_alone(cluster: Cluster, operator: OperatorProcess) -> Iterator[None]:
    """The session's operator steps aside while the bench runs its own."""
    operator.stop()
    try:
        yield
    finally:
        operator.remove_webhooks()
        operator.start()


def test_rollouts_keep_every_invariant_through_every_kind_of_fault(bench_alone: None, tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    args = [sys.executable, str(ROOT / "bench" / "chaos.py"), "--seed", "7", "--slots", "3", "--out", str(out),
            "--kills", str(FAULTS["operator-sigkill"]), "--apiserver", "1", "--etcd", "1", "--cuts", "1",
            "--prometheus", "1", "--prometheus-slow", "1", "--stops", "1",
            "--cut-max", "15", "--prometheus-every", "12", "--kinds", "bad,approved,healthy,paused"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    assert out.exists(), f"bench/chaos wrote no result (rc {run.returncode}):\n{run.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["violations"] == [], json.dumps(result["violations"], indent=1)[:5000]
    assert result["bench_errors"] == []
    for kind, at_least in FAULTS.items():
        assert result["faults_by_kind"].get(kind, 0) >= at_least, (kind, result["faults_by_kind"])
    phases = result["rollouts_by_kind_and_final_phase"]
    assert phases.get("bad", {}).get("RolledBack", 0) >= 1 and set(phases["bad"]) == {"RolledBack"}, phases
    for kind in ("healthy", "approved", "paused"):
        assert set(phases.get(kind, {})) <= {"Succeeded"}, phases
    assert sum(phases.get("healthy", {}).values()) + sum(phases.get("approved", {}).values()) >= 1, phases
    assert run.returncode == 0, run.stderr[-3000:]
