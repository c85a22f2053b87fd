"""Break glass: an emergency release skips the long bakes, never the review.

alice writes a fix that cannot wait, as an emergency release (spec.emergency) under a policy that wants two
approvals and bakes of at least 60 s but allows an emergency bake of 2 s. She cannot approve it herself;
it waits until others have (the policy's two count; bob's alone is not enough), then runs every wave for
2 s instead of 60 s, ends Succeeded, and is marked Emergency in its status, its history and Events, the
audit report and the operator's metrics. The users are the test bed's real token-authenticated ones.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import requests

from guardrails import Team, policy
from operator_process import OperatorProcess
from rollouts import Shop
from testbed import Cluster
from waiting import eventually

PLUGIN = Path(sys.executable).parent / "kubectl-guarded"
SLOW = [{"replicas": 1, "bake": "60s"}, {"weight": 50, "bake": "60s"}, {"weight": 100, "bake": "60s"}]
RULES = {"requiredApprovals": 2, "minBake": "60s", "emergencyBake": "2s"}


@pytest.fixture
def team(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Team:
    return Team(cluster, namespace)


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def emergency_count(operator: OperatorProcess, namespace: str) -> float:
    text = requests.get(f"http://{operator.metrics_address}/metrics", timeout=10).text
    match = re.search(rf'^guarded_emergency_releases_total{{namespace="{re.escape(namespace)}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_an_emergency_release_waits_for_others_approvals_then_bakes_each_wave_2s_not_60s(
        cluster: Cluster, namespace: str, team: Team, operator: OperatorProcess) -> None:
    team.shop(replicas=4)
    with policy(cluster, team, RULES) as policy_name:
        team.create_rollout("alice", "hotfix", waves=SLOW, emergency=True, description="fix the checkout crash",
                            ticket="INC-42")
        status = team.wait_phase("hotfix", "AwaitingApproval")
        assert status["emergency"] is True
        gate = next(g for g in status["gates"] if g["gate"] == "Approvals")
        assert "0/2 approvals of revision 1" in gate["message"] and "alice cannot approve" in gate["message"]
        rules = {(r["rule"], r["value"]): r["setBy"] for r in status["policy"]["rules"]}
        assert rules[("emergencyBake", "2s")] == [policy_name] and rules[("minBake", "60s")] == [policy_name]

        # alice's own approval is refused by the API server; bob's counts, and the policy's second is still due.
        assert "is an author of rollout 'hotfix'" in team.refused("alice", "hotfix")
        team.approve("bob", "hotfix")
        status = eventually(lambda: next((s for s in [team.status("hotfix")] for g in s.get("gates", [])
                                          if g["gate"] == "Approvals" and "1/2 approvals" in g["message"]), None),
                            timeout=30, what="bob's approval counted, the second one still due")
        assert status["phase"] == "AwaitingApproval" and not status.get("startedAt")
        team.approve("carol", "hotfix")
        done = team.wait_phase("hotfix", "Succeeded", timeout=120)

    assert [w["bake"] for w in done["plan"]] == ["2s", "2s", "2s"], done["plan"]
    history = done["history"]
    [emergency] = [h for h in history if h["reason"] == "EmergencyRelease"]
    assert "at most 2s" in emergency["message"] and "60s, 60s, 60s -> 2s, 2s, 2s" in emergency["message"]
    # Each wave's bake, measured from its WaveReady to the next wave's start (or the promotion).
    ready = [seconds(h["time"]) for h in history if h["reason"] == "WaveReady"]
    after = [seconds(h["time"]) for h in history if h["reason"] in ("WaveStarted", "Promoting")][1:]
    bakes = [b - a for a, b in zip(ready, after, strict=True)]
    assert len(bakes) == 3 and all(2.0 <= b < 15.0 for b in bakes), bakes
    started = next(seconds(h["time"]) for h in history if h["reason"] == "RolloutStarted")
    total = seconds(done["completedAt"]) - started
    print(f"emergency bakes (policy minBake 60s, emergencyBake 2s): {', '.join(f'{b:.2f}s' for b in bakes)}; "
          f"start to Succeeded {total:.1f}s")
    assert total < 60, "three waves of 2 s, where the policy's minBake alone would take 180 s"
    assert Shop(cluster, namespace).image() == "registry.example/shop:2.0.0"

    events = Shop(cluster, namespace).events("hotfix")
    assert any(e.reason == "EmergencyRelease" and e.type == "Warning" for e in events)

    audit = subprocess.run([str(PLUGIN), *cluster.kubectl_args("bob")[1:], "audit", "-n", namespace, "-o", "json"],
                           capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stderr
    [record] = json.loads(audit.stdout)["rollouts"]
    assert record["emergency"] is True and "every wave bakes at most 2s" in record["emergencyDetail"]
    assert record["authors"] == ["alice"] and {a["name"] for a in record["approvers"]} == {"bob", "carol"}
    assert "EmergencyRelease" in [e["reason"] for e in record["timeline"]]

    listed = subprocess.run([str(PLUGIN), *cluster.kubectl_args("bob")[1:], "list", "-n", namespace],
                            capture_output=True, text=True, timeout=60)
    assert listed.stdout.splitlines()[0].split()[:4] == ["NAME", "TARGET", "PHASE", "EMERGENCY"], listed.stdout
    assert listed.stdout.splitlines()[1].split()[:4] == ["hotfix", "shop", "Succeeded", "yes"], listed.stdout

    assert emergency_count(operator, namespace) == 1.0
