"""The operator moves a change out in waves on a real cluster, and survives its own death."""

from __future__ import annotations

import threading
import time

import pytest

from operator_process import OperatorProcess
from rollouts import Shop, guarded_rollout
from testbed import Cluster
from waiting import eventually


class Sampler:
    """Watches ready pods of stable and canary while a rollout runs (the capacity rule, observed)."""

    def __init__(self, shop: Shop, rollout: str) -> None:
        self.shop, self.rollout = shop, rollout
        self.samples: list[tuple[int, int, str | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            st = self.shop.status(self.rollout)
            self.samples.append((self.shop.ready(f"{self.shop.name}-canary"), self.shop.ready(self.shop.name),
                                 st.get("stage"), st.get("waveProgress")))
            time.sleep(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wave_history(status: dict) -> list[int]:
    revision = status.get("revision")
    return [h["wave"] for h in status.get("history", [])
            if h["reason"] == "WaveStarted" and h.get("revision") == revision]


def test_a_ten_replica_deployment_goes_through_every_wave_and_is_promoted(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(10)
    with Sampler(shop, "release") as sampler:
        shop.create_rollout(guarded_rollout("release"))
        status = shop.wait_phase("release", "Succeeded", timeout=180)

    assert wave_history(status) == [0, 1, 2, 3]
    assert shop.image() == "registry.example/shop:2.0.0"
    assert shop.deployment("shop-canary") is None
    eventually(lambda: shop.pod_images() == ["registry.example/shop:2.0.0"] * 10, timeout=60,
               what="10 pods on the new image")
    canary_sizes = sorted({c for c, _, stage, _ in sampler.samples if stage == "Bake"})
    assert canary_sizes == [1, 5, 10], "waves of 1 pod, 10% (1 of 10), 50%, 100%"
    in_progress = [(c, s) for c, s, stage, _ in sampler.samples if stage in ("ScaleCanary", "ScaleStable", "Bake")]
    assert in_progress, "the sampler saw the rollout in progress"
    assert min(c + s for c, s in in_progress) >= 10, "ready pods never fell below the target's replica count"
    reasons = {e.reason for e in shop.events("release")}
    assert {"RolloutStarted", "WaveStarted", "Promoting", "Succeeded"} <= reasons


def test_abort_mid_wave_rolls_back_to_the_old_image_with_full_capacity(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(10)
    shop.create_rollout(guarded_rollout("release", waves=[
        {"replicas": 1, "bake": "2s"}, {"weight": 50, "bake": "10m"}, {"weight": 100, "bake": "2s"}]))
    eventually(lambda: shop.status("release").get("stage") == "Bake" and shop.status("release").get("wave") == 1,
               timeout=90, what="wave 2 (50%) baking")
    assert shop.ready("shop-canary") == 5
    shop.request("release", "abort")
    status = shop.wait_phase("release", "RolledBack", timeout=60)

    assert status["rollbackReason"] == "Aborted"
    assert shop.deployment("shop-canary") is None
    assert shop.ready("shop") == 10
    assert shop.image() == "registry.example/shop:1.0.0"
    assert shop.pod_images() == ["registry.example/shop:1.0.0"] * 10


def test_a_killed_operator_resumes_without_repeating_or_skipping_a_wave(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(10)
    shop.create_rollout(guarded_rollout("release", waves=[
        {"replicas": 1, "bake": "2s"}, {"weight": 20, "bake": "6s"},
        {"weight": 50, "bake": "2s"}, {"weight": 100, "bake": "2s"}]))
    eventually(lambda: shop.status("release").get("wave") == 1 and shop.status("release").get("stage") == "Bake",
               timeout=90, what="wave 2 baking")
    operator.kill()
    before = shop.status("release")
    time.sleep(3)
    assert shop.status("release") == before, "nothing moves while the operator is dead"
    operator.start()
    status = shop.wait_phase("release", "Succeeded", timeout=120)

    assert wave_history(status) == [0, 1, 2, 3], status["history"]
    assert sum(1 for h in status["history"] if h["reason"] == "RolloutStarted") == 1
    assert shop.image() == "registry.example/shop:2.0.0"


def test_deleting_a_rollout_removes_its_canary_and_restores_the_stable(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(10)
    shop.create_rollout(guarded_rollout("release", waves=[{"weight": 50, "bake": "10m"}, {"weight": 100}]))
    eventually(lambda: shop.status("release").get("stage") == "Bake", timeout=90, what="the first wave baking")
    assert shop.ready("shop-canary") == 5 and shop.deployment("shop").spec.replicas == 5
    shop.custom.delete_namespaced_custom_object("rollouts.guarded.dev", "v1alpha1", namespace,
                                                "guardedrollouts", "release")
    eventually(lambda: shop.rollout("release") is None, timeout=60, what="the rollout to be gone")
    eventually(lambda: shop.deployment("shop-canary") is None, timeout=60, what="the canary to be gone")
    eventually(lambda: shop.ready("shop") == 10, timeout=60, what="10 stable pods")


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
    shop = Shop(cluster, namespace)
    shop.create_rollout(guarded_rollout("orphan", target="no-such-app"))
    status = shop.wait_phase("orphan", "Blocked", timeout=30)
    found = next(c for c in status["conditions"] if c["type"] == "TargetFound")
    assert found["status"] == "False" and found["reason"] == "TargetNotFound"
    assert "spec.target.name" in found["message"] and "no-such-app" in found["message"]
    assert shop.deployment("no-such-app-canary") is None
