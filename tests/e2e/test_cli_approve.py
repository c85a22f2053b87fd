"""`kubectl guarded approve` and `audit` as the people involved run them, against the real operator.

Alice writes a change in a namespace governed by a policy that wants one approval; she cannot approve
it herself, Bob can, the rollout then runs by itself, and the audit names them both. Each user is a
real token-authenticated identity with a kubeconfig context of their own, so this needs the local
test bed (the admission webhook takes the approver from the API server's userInfo).
"""

from __future__ import annotations

import json
import re

import pytest

from guardrails import Team, policy
from operator_process import OperatorProcess
from plugin_users import as_user, users_team
from testbed import Cluster


@pytest.fixture
def team(cluster: Cluster, namespace: str) -> Team:
    return users_team(cluster, namespace)


def test_bob_approves_alices_change_it_rolls_out_and_the_audit_names_them_both(
        cluster: Cluster, namespace: str, team: Team, operator: OperatorProcess) -> None:
    team.shop(replicas=4)
    with policy(cluster, team, {"requiredApprovals": 1}) as policy_name:
        team.create_rollout("alice", "release", description="New checkout flow", ticket="SHOP-1234",
                            rollbackPlan="the operator removes the canary")
        team.wait_phase("release", "AwaitingApproval")

        own = as_user(cluster, "alice", "approve", "release", "-n", namespace)
        assert own.returncode == 3, own.stdout + own.stderr
        assert own.stderr.startswith("Error from server (Forbidden): admission webhook "), own.stderr
        assert "'alice' is an author of rollout 'release' (authors: alice)" in own.stderr
        assert "created" not in own.stdout

        approved = as_user(cluster, "bob", "approve", "release", "-n", namespace, "--comment", "reviewed SHOP-1234",
                           "--wait", "30")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        lines = approved.stdout.splitlines()
        assert lines[0] == f'Approving revision 1 of guardedrollout "release" in namespace "{namespace}":'
        assert "  Authors:        alice" in lines and "  Ticket:         SHOP-1234" in lines
        created = next(line for line in lines if line.startswith("rolloutapproval/"))
        assert re.fullmatch(r"rolloutapproval/release-approval-[a-z0-9]{5} created: approved revision 1 of release "
                            r"as bob", created), created
        assert "Counted:      yes, for revision 1" in lines, approved.stdout
        assert "Approvals:    1/1 counted: bob (engineers)" in lines

        watched = as_user(cluster, "bob", "watch", "release", "-n", namespace, "--timeout", "180", timeout=240)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert watched.stdout.splitlines()[-1].split()[1] == "Succeeded"

        shown = as_user(cluster, "bob", "status", "release", "-n", namespace).stdout.splitlines()
        assert "Authors:      alice" in shown
        assert any(line.split()[:4] == ["Approvals", "yes", "Approved", "approved"] for line in shown), shown
        assert any(line.split() == ["requiredApprovals", "1", policy_name] for line in shown), shown

        audit = as_user(cluster, "bob", "audit", "-n", namespace, "-o", "json")
        assert audit.returncode == 0, audit.stderr
        [record] = json.loads(audit.stdout)["rollouts"]
        assert record["authors"] == ["alice"]
        [approver] = record["approvers"]
        assert approver["name"] == "bob" and approver["groups"][0] == "engineers", approver
        assert [(a["approver"], a["counted"], a["comment"]) for a in record["approvals"]] == [
            ("bob", True, "reviewed SHOP-1234")]
        assert record["documentation"]["ticket"] == "SHOP-1234"
        assert {"rule": "requiredApprovals", "value": "1", "setBy": [policy_name]} in record["policy"]["rules"]
        assert record["outcome"]["phase"] == "Succeeded" and record["outcome"]["completedAt"]
        reasons = [entry["reason"] for entry in record["timeline"]]
        assert reasons.index("AwaitingApproval") < reasons.index("ApprovalCounted") < reasons.index("RolloutStarted")
        assert reasons[-1] == "Succeeded"
