"""Configuration rides the waves, on the test bed, with the traffic simulator reading each pod's behaviour
from the ConfigMap it mounts (sim.guarded.dev/config-key): only the pods that read a bad version drop orders.

A bad ConfigMap is rolled back in wave 1 with the stable pods never having read it; a good one is promoted
and the target reads its version, the old content kept as a version; a Secret rides the waves and its data
is in no status, Event, log or audit output.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import pytest

from operator_process import OperatorProcess
from rollouts import (
    ANALYSIS,
    GROUP,
    SIM_ANNOTATIONS,
    Shop,
    guarded_rollout,
    serving_shop,
    shop_deployment,
)
from story import Rollout, Sampler, then, when
from testbed import ROOT, Cluster
from waiting import eventually

WAVES = [{"replicas": 1, "bake": "8s"}, {"weight": 50, "bake": "6s"}, {"weight": 100, "bake": "4s"}]
GOOD = {"order-ratio": 0.05, "checkout": {"enabled": True}}
BAD = {"order-ratio": 0.0005, "checkout": {"enabled": True}}   # a 99% drop of orders for who reads it


def config_shop(replicas: int = 10) -> dict:
    d = shop_deployment("shop", replicas)
    template = d["spec"]["template"]
    template["metadata"]["annotations"] = {**SIM_ANNOTATIONS, "sim.guarded.dev/config-key": "settings.json"}
    template["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "shop-config"}}]
    template["spec"]["containers"][0]["volumeMounts"] = [{"name": "settings", "mountPath": "/etc/shop"}]
    return d


@pytest.fixture
def shop(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Shop:
    if cluster.prometheus_url is None:
        pytest.skip("needs a Prometheus that scrapes the traffic simulator (GUARDED_TEST_PROMETHEUS_URL)")
    Shop(cluster, namespace).core.create_namespaced_config_map(namespace, {"metadata": {"name": "shop-config"},
                                                    "data": {"settings.json": json.dumps(GOOD), "region": "eu"}})
    return serving_shop(cluster, namespace, config_shop())


def config_release(shop: Shop, name: str, settings: dict, waves: list[dict] | None = None, **spec: Any) -> Rollout:
    body = guarded_rollout(name, waves=waves or WAVES, analysis=dict(ANALYSIS), **spec)
    body["spec"]["change"] = {"configMaps": [{"name": "shop-config", "data": {"settings.json": json.dumps(settings)}}]}
    return when.rollout_created(shop, name, body=body)


def data(shop: Shop, name: str) -> dict[str, str] | None:
    try:
        return shop.core.read_namespaced_config_map(name, shop.namespace).data
    except Exception:
        return None


def volumes(shop: Shop, deployment: str) -> list[str]:
    d = shop.deployment(deployment)
    return [v.config_map.name for v in (d.spec.template.spec.volumes or []) if v.config_map] if d else []


class StableView(Sampler):
    """What the stable pods read: the target's ConfigMap references and their content."""

    def __init__(self, shop: Shop) -> None:
        super().__init__()
        self.shop = shop

    def sample(self) -> tuple[tuple[str, ...], str]:
        refs = tuple(volumes(self.shop, "shop"))
        return refs, json.dumps([data(self.shop, r) for r in refs], sort_keys=True)


def test_a_configmap_that_drops_orders_is_rolled_back_in_wave_1_and_the_stable_never_reads_it(shop: Shop) -> None:
    started = time.monotonic()
    with StableView(shop) as view:
        bad = config_release(shop, "bad-config", BAD)
        canary_reads = eventually(lambda: volumes(shop, "shop-canary") or None, timeout=60, what="the canary")
        status = then.phase_is(bad, "RolledBack", within=120)
        caught = time.monotonic() - started
    assert status["rollbackReason"] == "AnalysisFailed"
    assert next(h["wave"] for h in status["history"] if h["reason"] == "RollingBack") == 0, "caught in wave 1"
    [version] = canary_reads
    assert version.startswith("shop-config-") and version == status["config"][0]["version"]
    # Over the whole run (every 0.2 s), the stable pods read shop-config with its original content only.
    assert {refs for refs, _ in view.samples} == {("shop-config",)}
    # At least 10 samples (2 s): the view kept sampling; a faster rollback makes fewer, so no more is asked.
    assert len({content for _, content in view.samples}) == 1 and len(view.samples) >= 10
    assert json.loads(data(shop, "shop-config")["settings.json"]) == GOOD
    eventually(lambda: data(shop, version) is None, timeout=30, what="the bad version removed")
    then.canary_gone(shop, within=30)
    then.stable_ready(shop, 10, within=30)
    times = {h["reason"]: datetime.fromisoformat(h["time"].replace("Z", "+00:00")) for h in status["history"]}
    judged = (times["RollingBack"] - times["WaveReady"]).total_seconds()
    print(f"bad ConfigMap: rolled back {judged:.1f}s after its first canary pod was Ready, "
          f"{caught:.1f}s after the rollout was created")


def test_a_good_configmap_is_promoted_and_the_target_reads_its_version_the_old_one_kept(shop: Shop) -> None:
    good = config_release(shop, "good-config", {**GOOD, "checkout": {"enabled": True, "banner": "winter"}},
                          waves=[{"replicas": 1, "bake": "4s"}, {"weight": 100, "bake": "2s"}])
    status = then.phase_is(good, "Succeeded", within=180)
    version = status["config"][0]["version"]
    assert volumes(shop, "shop") == [version]
    assert json.loads(data(shop, version)["settings.json"])["checkout"]["banner"] == "winter"
    assert json.loads(data(shop, "shop-config")["settings.json"])["checkout"]["banner"] == "winter"
    # The content the pods read before is kept as a version owned by the Deployment: a release of it
    # (contentFrom) undoes the change without a rollback.
    kept = [c for c in shop.core.list_namespaced_config_map(shop.namespace, label_selector=f"{GROUP}/config-of="
                                                            "shop-config").items if c.metadata.name != version]
    assert [json.loads(c.data["settings.json"]) for c in kept] == [GOOD]
    assert [o.kind for o in kept[0].metadata.owner_references] == ["Deployment"]
    undo = guarded_rollout("undo-config", waves=[{"replicas": 1, "bake": "2s"}, {"weight": 100, "bake": "2s"}])
    undo["spec"]["change"] = {"configMaps": [{"name": "shop-config", "contentFrom": kept[0].metadata.name}]}
    undone = then.phase_is(when.rollout_created(shop, "undo-config", body=undo), "Succeeded", within=120)
    assert volumes(shop, "shop") == [kept[0].metadata.name] == [undone["config"][0]["version"]]


SECRET_VALUE = "hunter2-s3cr3t-value"


@pytest.fixture
def small_shop(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Shop:
    """4 pods reading shop-config, no traffic needed (no analysis)."""
    s = Shop(cluster, namespace)
    s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "shop-config"},
                                                    "data": {"settings.json": json.dumps(GOOD)}})
    s.apps.create_namespaced_deployment(namespace, config_shop(replicas=4))
    eventually(lambda: s.ready("shop") == 4, timeout=90, what="4 ready shop pods")
    return s


def test_a_secret_rides_the_waves_and_its_data_is_in_no_status_event_log_or_audit(
        small_shop: Shop, operator: OperatorProcess) -> None:
    shop = small_shop
    core = shop.core
    core.create_namespaced_secret(shop.namespace, {"metadata": {"name": "shop-secret"},
                                                   "stringData": {"token": "old-token"}})
    core.create_namespaced_secret(shop.namespace, {"metadata": {"name": "shop-secret-next"},
                                                   "stringData": {"token": SECRET_VALUE}})
    token = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "shop-secret", "key": "token"}}}
    shop.apps.patch_namespaced_deployment("shop", shop.namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [token]}]}}}})
    eventually(lambda: shop.ready("shop") == 4 and shop.deployment("shop").status.updated_replicas == 4,
               timeout=90, what="the shop reading the Secret")
    body = guarded_rollout("secret-change", waves=[{"replicas": 1, "bake": "3s"}, {"weight": 100, "bake": "3s"}])
    body["spec"]["change"] = {"secrets": [{"name": "shop-secret", "contentFrom": "shop-secret-next"}]}
    rollout = when.rollout_created(shop, "secret-change", body=body)
    status = then.phase_is(rollout, "Succeeded", within=120)
    version = status["config"][0]["version"]
    env = shop.deployment("shop").spec.template.spec.containers[0].env
    assert [e.value_from.secret_key_ref.name for e in env] == [version]
    copied = core.read_namespaced_secret(version, shop.namespace)
    assert base64.b64decode(copied.data["token"]).decode() == SECRET_VALUE and copied.immutable
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    audit = subprocess.run([sys.executable, "-m", "guarded.cli.main", "audit", "-n", shop.namespace,
                            "--kubeconfig", shop.cluster.kubeconfig, *context_args(shop.cluster)],
                           capture_output=True, text=True, cwd=ROOT, check=False)
    said = {
        "status": json.dumps(rollout.status()),
        "events": json.dumps([e.message for e in core.list_namespaced_event(shop.namespace).items]),
        "operator log": operator.tail(100000),
        "audit": audit.stdout + audit.stderr,
    }
    assert audit.returncode == 0 and "secret-change" in audit.stdout, audit.stderr
    for where, text in said.items():
        assert SECRET_VALUE not in text and encoded not in text, f"the Secret's data is in the {where}"


def context_args(cluster: Cluster) -> list[str]:
    context = cluster.context_for("admin")
    return ["--context", context] if context else []
