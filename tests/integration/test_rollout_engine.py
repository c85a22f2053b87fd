"""The operator moves a change out in waves on a real cluster, and survives its own death."""

from __future__ import annotations

import time

import pytest

from operator_process import OperatorProcess
from rollouts import guarded_rollout
from story import given, then, when
from testbed import Cluster
from waiting import eventually


def wave_history(status: dict) -> list[int]:
    revision = status.get("revision")
    return [h["wave"] for h in status.get("history", [])
            if h["reason"] == "WaveStarted" and h.get("revision") == revision]


def test_a_ten_replica_deployment_goes_through_every_wave_and_is_promoted(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = given.a_shop(cluster, namespace, replicas=10)
    with when.watched(shop, "release") as watch:
        release = when.rollout_created(shop, "release")
        status = then.phase_is(release, "Succeeded", within=180)

    assert wave_history(status) == [0, 1, 2, 3]
    assert shop.image() == "registry.example/shop:2.0.0"
    then.canary_gone(shop)
    eventually(lambda: shop.pod_images() == ["registry.example/shop:2.0.0"] * 10, timeout=60,
               what="10 pods on the new image")
    canary_sizes = sorted({s.canary for s in watch.samples if s.stage == "Bake"})
    assert canary_sizes == [1, 5, 10], "waves of 1 pod, 10% (1 of 10), 50%, 100%"
    in_progress = [(s.canary, s.stable) for s in watch.samples if s.stage in ("ScaleCanary", "ScaleStable", "Bake")]
    assert in_progress, "the watch saw the rollout in progress"
    assert min(c + s for c, s in in_progress) >= 10, "ready pods never fell below the target's replica count"
    reasons = {e.reason for e in release.events()}
    assert {"RolloutStarted", "WaveStarted", "Promoting", "Succeeded"} <= reasons


def test_abort_mid_wave_rolls_back_to_the_old_image_with_full_capacity(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = given.a_shop(cluster, namespace, replicas=10)
    release = when.rollout_created(shop, "release", waves=[
        {"replicas": 1, "bake": "2s"}, {"weight": 50, "bake": "10m"}, {"weight": 100, "bake": "2s"}])
    when.rollout_reaches(release, stage="Bake", wave=1, within=90, what="wave 2 (50%) baking")
    assert shop.ready("shop-canary") == 5
    when.asked(release, "abort")
    status = then.phase_is(release, "RolledBack", within=60)

    assert status["rollbackReason"] == "Aborted"
    then.canary_gone(shop)
    then.stable_ready(shop, 10)
    assert shop.image() == "registry.example/shop:1.0.0"
    assert shop.pod_images() == ["registry.example/shop:1.0.0"] * 10


@pytest.mark.exclusive
def test_a_killed_operator_resumes_without_repeating_or_skipping_a_wave(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = given.a_shop(cluster, namespace, replicas=10)
    release = when.rollout_created(shop, "release", waves=[
        {"replicas": 1, "bake": "2s"}, {"weight": 20, "bake": "6s"},
        {"weight": 50, "bake": "2s"}, {"weight": 100, "bake": "2s"}])
    when.rollout_reaches(release, stage="Bake", wave=1, within=90, what="wave 2 baking")
    when.operator_killed(operator)
    before = release.status()
    time.sleep(3)  # the operator is dead: there is no state to wait for, only time in which nothing may move
    assert release.status() == before, "nothing moves while the operator is dead"
    when.operator_started(operator)
    status = then.phase_is(release, "Succeeded", within=120)

    assert wave_history(status) == [0, 1, 2, 3], status["history"]
    assert sum(1 for h in status["history"] if h["reason"] == "RolloutStarted") == 1
    assert shop.image() == "registry.example/shop:2.0.0"


def test_deleting_a_rollout_removes_its_canary_and_restores_the_stable(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = given.a_shop(cluster, namespace, replicas=10)
    release = when.rollout_created(shop, "release", waves=[{"weight": 50, "bake": "10m"}, {"weight": 100}])
    when.rollout_reaches(release, stage="Bake", within=90, what="the first wave baking")
    assert shop.ready("shop-canary") == 5 and shop.deployment("shop").spec.replicas == 5
    when.rollout_deleted(release)
    then.rollout_gone(release, within=60)
    then.canary_gone(shop, within=60)
    then.stable_ready(shop, 10, within=60)


@pytest.mark.parametrize("waves, expected", [
    ([{"weight": 50}, {"weight": 10}], "wave weights must increase strictly"),
    ([{"weight": 0}], "spec.waves[0].weight"),
    ([{"weight": 10, "replicas": 2}], "exactly one of weight or replicas"),
])
def test_malformed_waves_are_rejected_by_the_api_server_naming_the_field(
        cluster: Cluster, namespace: str, operator: OperatorProcess, waves: list[dict], expected: str) -> None:
    result = cluster.apply(guarded_rollout("bad", waves=waves), namespace=namespace, check=False)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "spec.waves" in result.stderr


def test_an_unknown_target_is_reported_in_status_naming_the_field(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = given.no_shop(cluster, namespace)
    orphan = when.rollout_created(shop, "orphan", target="no-such-app")
    status = then.phase_is(orphan, "Blocked", within=30)
    found = orphan.condition("TargetFound", status)
    assert found["status"] == "False" and found["reason"] == "TargetNotFound"
    assert "spec.target.name" in found["message"] and "no-such-app" in found["message"]
    assert shop.deployment("no-such-app-canary") is None
