"""A shared ConfigMap read by three Deployments is one change with one GuardedRollout (spec.consumers): the first
wave is one pod of one consumer, later waves grow across all three, each judged against its own stable pods;
a good change is promoted across all three, a bad one rolled back across all three with the other two
consumers' pods never having read it. The traffic simulator takes each pod's order ratio from the
settings.json it mounts (sim.guarded.dev/config-key)."""

from __future__ import annotations

import json

import pytest

from operator_process import OperatorProcess
from rollouts import (
    ANALYSIS,
    GROUP,
    PLURAL,
    SIM_ANNOTATIONS,
    VERSION,
    Shop,
    guarded_rollout,
    prometheus_has_traffic,
    shop_deployment,
)
from story import Rollout, Sampler, then, when
from testbed import Cluster
from waiting import eventually

CONSUMERS = ("cart", "checkout", "search")
GOOD = {"order-ratio": 0.05, "feature": "baseline"}
BAD = {"order-ratio": 0.0005, "feature": "broken"}   # a 99% drop of orders for every pod that reads it
WAVES = [{"replicas": 1, "bake": "5s"}, {"weight": 50, "bake": "4s"}, {"weight": 100, "bake": "2s"}]


def consumer(name: str) -> dict:
    d = shop_deployment(name, 4)
    template = d["spec"]["template"]
    template["metadata"]["annotations"] = {**SIM_ANNOTATIONS, "sim.guarded.dev/config-key": "settings.json"}
    template["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "shop-config"}}]
    return d


@pytest.fixture
def shop(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Shop:
    if cluster.prometheus_url is None:
        pytest.skip("needs a Prometheus that scrapes the traffic simulator (GUARDED_TEST_PROMETHEUS_URL)")
    s = Shop(cluster, namespace, name="cart")
    s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "shop-config"},
                                                    "data": {"settings.json": json.dumps(GOOD)}})
    for name in CONSUMERS:
        s.apps.create_namespaced_deployment(namespace, consumer(name))
    for name in CONSUMERS:
        eventually(lambda n=name: s.ready(n) == 4, timeout=90, what=f"4 ready {name} pods")
    eventually(lambda: prometheus_has_traffic(cluster, namespace), timeout=60, what="traffic in Prometheus")
    return s


def shared_release(shop: Shop, name: str, settings: dict) -> Rollout:
    body = guarded_rollout(name, target="cart", waves=WAVES, analysis=dict(ANALYSIS))
    body["spec"]["change"] = {"configMaps": [{"name": "shop-config", "data": {"settings.json": json.dumps(settings)}}]}
    body["spec"]["consumers"] = [{"name": "checkout"}, {"name": "search"}]
    return when.rollout_created(shop, name, body=body)


def reads(shop: Shop, deployment: str) -> list[str]:
    d = shop.deployment(deployment)
    return [v.config_map.name for v in (d.spec.template.spec.volumes or []) if v.config_map] if d else []


class Readers(Sampler):
    """Which ConfigMap each consumer's stable and canary pods read (and the canary's Ready pods)."""

    def __init__(self, shop: Shop) -> None:
        super().__init__()
        self.shop = shop

    def sample(self) -> dict:
        return {name: (tuple(reads(self.shop, name)),
                       (self.shop.ready(f"{name}-canary"), tuple(reads(self.shop, f"{name}-canary"))))
                for name in CONSUMERS}


def children(shop: Shop, parent: str) -> list[dict]:
    return shop.custom.list_namespaced_custom_object(GROUP, VERSION, shop.namespace, PLURAL,
                                                     label_selector=f"{GROUP}/part-of={parent}")["items"]


def test_a_shared_configmap_is_one_rollout_first_one_pod_of_one_consumer_then_promoted_across_all_three(
        shop: Shop) -> None:
    with Readers(shop) as readers:
        rollout = shared_release(shop, "shared-good", {**GOOD, "feature": "faster-search"})
        status = then.phase_is(rollout, "Succeeded", within=300)
    version = status["config"][0]["version"]
    assert {name: reads(shop, name) for name in CONSUMERS} == {name: [version] for name in CONSUMERS}
    assert [(c["name"], c["phase"]) for c in status["consumers"]] == [
        ("cart", "Succeeded"), ("checkout", "Succeeded"), ("search", "Succeeded")]
    assert sorted(c["spec"]["target"]["name"] for c in children(shop, "shared-good")) == ["checkout", "search"]
    # The first wave ran one pod of one consumer: while any canary pod was Ready, the first ones were cart's.
    first = next(s for s in readers.samples if any(s[n][1][0] for n in CONSUMERS))
    assert first["cart"][1][0] == 1 and first["checkout"][1][0] == 0 and first["search"][1][0] == 0
    # Later waves grew across all three.
    assert all(any(s[n][1][0] >= 2 for s in readers.samples) for n in CONSUMERS)
    assert json.loads(shop.core.read_namespaced_config_map("shop-config", shop.namespace).data["settings.json"]) \
        == {**GOOD, "feature": "faster-search"}


def test_a_bad_shared_configmap_is_rolled_back_across_all_three_and_the_other_two_never_read_it(
        shop: Shop) -> None:
    with Readers(shop) as readers:
        rollout = shared_release(shop, "shared-bad", BAD)
        status = then.phase_is(rollout, "RolledBack", within=180)
        eventually(lambda: all(c.get("phase") in ("RolledBack", None) or c["name"] == "cart"
                               for c in rollout.status().get("consumers", [])), timeout=60,
                   what="every consumer's rollout ended")
    assert status["rollbackReason"] == "AnalysisFailed"
    assert next(h["wave"] for h in status["history"] if h["reason"] == "RollingBack") == 0, "caught in wave 1"
    for name in ("checkout", "search"):
        assert all(s[name][0] == ("shop-config",) for s in readers.samples), f"{name}'s stable read the version"
        assert all(s[name][1][0] == 0 for s in readers.samples), f"{name} had a canary pod"
    assert all(s["cart"][0] == ("shop-config",) for s in readers.samples)
    # The samples cover the wave the version ran in (not a count of them: a faster rollback makes fewer).
    assert any(s["cart"][1][0] >= 1 for s in readers.samples), "no sample while cart's canary pod was Ready"
    for name in CONSUMERS:
        assert reads(shop, name) == ["shop-config"] and shop.ready(name) == 4
    assert json.loads(shop.core.read_namespaced_config_map("shop-config", shop.namespace).data["settings.json"]) == GOOD
    eventually(lambda: all(shop.deployment(f"{n}-canary") is None for n in CONSUMERS), timeout=30, what="no canary")
