"""The audit report after a day of changes: who wrote each, who approved it, what the checks and the
analysis said, and how it ended, all read back from the cluster by `kubectl guarded audit`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from guardrails import Team, policy
from operator_process import OperatorProcess
from rollouts import ANALYSIS, behaviour_change, prometheus_has_traffic, simulated_shop
from testbed import Cluster
from waiting import eventually

PLUGIN = Path(sys.executable).parent / "kubectl-guarded"
WAVES = [{"replicas": 1, "bake": "8s"}, {"weight": 100, "bake": "4s"}]


@pytest.fixture
def team(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Team:
    if cluster.prometheus_url is None:
        pytest.skip("needs a Prometheus that scrapes the traffic simulator (GUARDED_TEST_PROMETHEUS_URL)")
    team = Team(cluster, namespace)
    apps = team.shop("web", replicas=2).apps
    apps.create_namespaced_deployment(namespace, simulated_shop())
    eventually(lambda: team.ready("shop") == 10, timeout=90, what="10 ready shop pods")
    # A pre-rollout baseline of 10 s of the shop's traffic: with 2 s of it (500 requests, a dozen orders) its
    # conservative bound on the order ratio is a third of the real one, and the healthy release's PreRollout
    # judge needs minutes of canary traffic before it can Pass (a CI run timed out so, at 175 s).
    eventually(lambda: prometheus_has_traffic(cluster, namespace, at_least=3000), timeout=90,
               what="10 s of shop traffic in Prometheus")
    return team


def audit(cluster: Cluster, namespace: str, output: str) -> str:
    # The plugin takes kubectl's flags; the admin's are the kubeconfig (and context) kubectl itself gets.
    proc = subprocess.run([str(PLUGIN), *cluster.kubectl_args()[1:], "audit", "-n", namespace, "--since", "1h",
                           "-o", output],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_audit_report_names_authors_approvers_checks_evidence_and_outcomes(cluster: Cluster, team: Team) -> None:
    rules = {"requiredApprovals": 1, "seniorGroups": ["senior-engineers"], "requiredDocumentation": ["ticket"]}
    with policy(cluster, team, rules) as name:
        team.create_rollout("alice", "healthy", ticket="SHOP-1", waves=WAVES, analysis=ANALYSIS)
        team.wait_phase("healthy", "AwaitingApproval")
        team.approve("bob", "healthy")
        team.wait_phase("healthy", "Succeeded", timeout=180)

        change = {"containers": [{"name": "app", "image": "registry.example/shop:2.1.0"}],
                  "podTemplatePatch": behaviour_change(order_ratio="0.0005")}  # the release loses 99% of orders
        team.create_rollout("alice", "assistant-change", change=change, waves=WAVES, analysis=ANALYSIS,
                            aiAssisted=True, ticket="SHOP-2", description="suggested by an assistant")
        team.wait_phase("assistant-change", "AwaitingApproval")
        team.approve("bob", "assistant-change")
        team.approve("carol", "assistant-change")
        team.wait_phase("assistant-change", "RolledBack", timeout=180)

        team.create_rollout("dave", "unpinned", target="web", ticket="WEB-3",
                            change={"containers": [{"name": "app", "image": "registry.example/shop:latest"}]})
        team.wait_phase("unpinned", "Blocked")

    report = json.loads(audit(cluster, team.namespace, "json"))
    by_name = {r["name"]: r for r in report["rollouts"]}
    assert set(by_name) == {"healthy", "assistant-change", "unpinned"}

    healthy = by_name["healthy"]
    assert healthy["authors"] == ["alice"] and not healthy["aiAssisted"]
    assert [(a["name"], "engineers" in a["groups"]) for a in healthy["approvers"]] == [("bob", True)]
    assert healthy["validation"]["passed"] is True and healthy["outcome"]["phase"] == "Succeeded"
    assert healthy["policy"]["policies"] == [name]
    assert healthy["analysis"] and healthy["analysis"][-1]["verdict"] == "Pass"

    assisted = by_name["assistant-change"]
    assert assisted["aiAssisted"] is True and assisted["authors"] == ["alice"]
    approvers = {a["name"]: a["groups"] for a in assisted["approvers"]}
    assert set(approvers) == {"bob", "carol"} and "senior-engineers" in approvers["carol"]
    assert assisted["outcome"]["phase"] == "RolledBack" and assisted["outcome"]["rollbackReason"] == "AnalysisFailed"
    failed = assisted["analysis"][-1]
    order = next(j for j in failed["judgements"] if j["metric"] == "order-rate")
    assert order["verdict"] == "Fail" and any(e["canaryRequests"] > 0 for e in order["evidence"])

    unpinned = by_name["unpinned"]
    assert unpinned["authors"] == ["dave"] and unpinned["approvers"] == []
    assert unpinned["validation"]["passed"] is False
    assert [f["rule"] for f in unpinned["validation"]["findings"]] == ["ImageNotLatest"]
    assert unpinned["outcome"]["phase"] == "Blocked"

    markdown = audit(cluster, team.namespace, "markdown")
    for text in ("healthy", "assistant-change", "unpinned", "alice", "bob", "carol", "dave", "ImageNotLatest",
                 "AnalysisFailed"):
        assert text in markdown, text
