"""Guarded workloads: with the operator back, a recorded desire is picked up once.

alice changes a guarded Deployment while the operator runs but cannot create releases (the failpoint
`release/<deployment>`, guarded/faults.py, raises where it would): the webhook records her desire on the
Deployment and no release exists. The operator is restarted without the failpoint and exactly one
release, authored by alice, appears; another restart leaves it at one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from guardrails import Team, policy
from operator_process import OperatorProcess
from rollouts import GROUP, PLURAL, VERSION
from testbed import Cluster
from waiting import eventually

DEPLOYMENT = "pickup-shop"
NEW = "registry.example/shop:7.0.0"
DEFAULTS = {"waves": [{"replicas": 1, "bake": "2s"}, {"weight": 100, "bake": "1s"}]}

pytestmark = pytest.mark.exclusive  # it replaces the shared operator


@pytest.fixture
def operators(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """(one that cannot create releases, the session's own): the session's steps aside until the test starts
    it again; whatever happens, it runs again afterwards."""
    operator.stop()
    failing = OperatorProcess(cluster, env={"GUARDED_FAILPOINTS": f"release/{DEPLOYMENT}"})
    try:
        failing.start()
        yield failing, operator
    finally:
        failing.stop()
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()


def deployment(team: Team) -> dict[str, Any]:
    out = team.cluster.kubectl("get", "deployment", DEPLOYMENT, "-n", team.namespace, "-o", "json")
    return json.loads(out.stdout)


def annotations(team: Team) -> dict[str, str]:
    return deployment(team)["metadata"].get("annotations") or {}


def releases(team: Team) -> list[dict[str, Any]]:
    items = team.custom().list_namespaced_custom_object(GROUP, VERSION, team.namespace, PLURAL)["items"]
    return [r for r in items if (r["metadata"].get("labels") or {}).get(f"{GROUP}/from-apply") == "true"]


def still(probe: Any, seconds: float, what: str) -> None:
    """`probe()` holds for `seconds` (checked every 0.5 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), what
        time.sleep(0.5)


def test_with_the_operator_back_a_recorded_desire_is_picked_up_once(
        cluster: Cluster, namespace: str, operators: tuple[OperatorProcess, OperatorProcess]) -> None:
    failing, operator = operators
    team = Team(cluster, namespace)
    team.shop(name=DEPLOYMENT, labels={"tier": "1"})
    with policy(cluster, team, {"requiredApprovals": 1}, guardWorkloads=True, releaseDefaults=DEFAULTS,
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}):
        eventually(lambda: (deployment(team)["metadata"].get("labels") or {}).get(f"{GROUP}/guarded") == "true",
                   timeout=30, what="the Deployment labelled guarded")
        running = deployment(team)["spec"]["template"]

        out = team.cluster.kubectl("set", "image", f"deployment/{DEPLOYMENT}", f"app={NEW}", "-n", namespace,
                                   user="alice")
        assert "guarded" in out.stderr, out.stderr
        desire = eventually(lambda: annotations(team).get(f"{GROUP}/desired-hash"), timeout=30,
                            what="alice's desire recorded on the Deployment")
        recorded = annotations(team)
        assert recorded[f"{GROUP}/desired-by"] == "alice"
        assert json.loads(recorded[f"{GROUP}/desired-template"])["spec"]["containers"][0]["image"] == NEW
        assert deployment(team)["spec"]["template"] == running
        # The operator saw it (the failpoint raised where the release would have been created) and made none.
        eventually(lambda: "failpoint release" in failing.tail(400), timeout=30,
                   what="the operator to reach the release failpoint")
        still(lambda: releases(team) == [], 5, "no release while the operator cannot create one")
        assert f"{GROUP}/release" not in annotations(team)

        failing.stop()
        started = time.monotonic()
        operator.start()
        [release] = eventually(lambda: releases(team), timeout=60,
                               what="the release of alice's desire once the operator is back")
        picked = time.monotonic() - started
        name = release["metadata"]["name"]
        assert name == f"{DEPLOYMENT}-{desire[:10]}"
        assert json.loads(release["metadata"]["annotations"][f"{GROUP}/authors"]) == ["alice"]
        assert release["spec"]["change"]["template"]["spec"]["containers"][0]["image"] == NEW
        team.wait_phase(name, "AwaitingApproval")  # judged like any release: the policy wants an approval
        eventually(lambda: annotations(team).get(f"{GROUP}/release") == name, timeout=30,
                   what="the Deployment naming its release")
        still(lambda: [r["metadata"]["name"] for r in releases(team)] == [name], 5, "exactly one release")

        operator.stop()
        operator.start()
        still(lambda: [r["metadata"]["name"] for r in releases(team)] == [name], 8,
              "still one release after another restart")
        assert team.rollout(name)["metadata"]["uid"] == release["metadata"]["uid"], "the same object, not a new one"
        assert deployment(team)["spec"]["template"] == running
        print(f"recorded desire picked up {picked:.2f}s after the operator was started")
