"""Automated validation of configuration before wave 1 (AWS AppConfig's validators): a RolloutPolicy requires
that a key of a changed ConfigMap parses and validates against a JSON Schema the platform team keeps in a
ConfigMap. Invalid JSON and a schema violation are blocked with the key and the schema path named; nothing
of the change reaches a pod; a valid change goes."""

from __future__ import annotations

import json

import pytest

from guardrails import Team, policy
from operator_process import OperatorProcess
from rollouts import Shop, guarded_rollout, shop_deployment
from story import Rollout, then, when
from testbed import Cluster
from waiting import eventually

SCHEMA = {
    "type": "object", "required": ["checkout"],
    "properties": {"checkout": {"type": "object", "required": ["enabled"],
                                "properties": {"enabled": {"type": "boolean"},
                                               "maxItems": {"type": "integer", "minimum": 1}}}},
}
RULE = {"configMap": "shop-config", "key": "settings.json", "format": "json"}


@pytest.fixture
def team(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Team:
    return Team(cluster, namespace)


@pytest.fixture
def shop(team: Team, namespace: str) -> Shop:
    s = Shop(team.cluster, namespace)
    s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "checkout-schema"},
                                                    "data": {"schema.json": json.dumps(SCHEMA)}})
    s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "shop-config"}, "data": {
        "settings.json": json.dumps({"checkout": {"enabled": True}})}})
    body = shop_deployment("shop", 4)
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "shop-config"}}]
    s.apps.create_namespaced_deployment(namespace, body)
    eventually(lambda: s.ready("shop") == 4, timeout=90, what="4 ready shop pods")
    return s


def release(shop: Shop, name: str, settings: str) -> Rollout:
    body = guarded_rollout(name, waves=[{"replicas": 1, "bake": "1s"}, {"weight": 100, "bake": "1s"}],
                           description="settings", ticket="SHOP-1")
    body["spec"]["change"] = {"configMaps": [{"name": "shop-config", "data": {"settings.json": settings}}]}
    return when.rollout_created(shop, name, body=body)


def volumes(shop: Shop) -> list[str]:
    return [v.config_map.name for v in shop.deployment("shop").spec.template.spec.volumes or [] if v.config_map]


def blocked(rollout: Rollout) -> dict:
    status = then.phase_is(rollout, "Blocked", within=60)
    assert rollout.condition("Validated", status)["status"] == "False"
    assert status.get("wave") is None and status["stage"] == "Pending"
    assert rollout.shop.deployment("shop-canary") is None
    return status


def test_invalid_json_and_a_schema_violation_are_blocked_before_wave_1_naming_the_key_and_the_schema_path(
        cluster: Cluster, team: Team, shop: Shop, namespace: str) -> None:
    schema = {"namespace": namespace, "name": "checkout-schema", "key": "schema.json"}
    with policy(cluster, team, {}, configValidation=[{**RULE, "schemaFrom": schema}]):
        broken = release(shop, "broken-json", '{"checkout": {"enabled": true,}')
        status = blocked(broken)
        [finding] = status["validation"]
        assert finding["rule"] == "ConfigParse"
        assert finding["field"] == "spec.change.configMaps[0].data[settings.json]"
        assert "line 1" in finding["message"] and "json" in finding["message"].lower()

        wrong = release(shop, "wrong-type", json.dumps({"checkout": {"enabled": "yes", "maxItems": 0}}))
        status = blocked(wrong)
        findings = {f["message"].split(" (schema path ")[1].split(";")[0]: f for f in status["validation"]}
        assert set(findings) == {"properties/checkout/properties/enabled/type",
                                 "properties/checkout/properties/maxItems/minimum"}
        enabled = findings["properties/checkout/properties/enabled/type"]
        assert enabled["rule"] == "ConfigSchema" and "/checkout/enabled" in enabled["message"]
        assert f"{namespace}/checkout-schema#schema.json" in enabled["message"]
        message = wrong.condition("Validated", status)["message"]
        assert "settings.json" in message and "properties/checkout/properties/enabled/type" in message

        good = release(shop, "good-settings", json.dumps({"checkout": {"enabled": False, "maxItems": 5}}))
        done = then.phase_is(good, "Succeeded", within=90)
        assert volumes(shop) == [done["config"][0]["version"]]   # the valid change reached the pods


def test_a_schema_the_operator_cannot_read_blocks_fail_safe(cluster: Cluster, team: Team, shop: Shop,
                                                             namespace: str) -> None:
    schema = {"namespace": namespace, "name": "no-such-schema", "key": "schema.json"}
    with policy(cluster, team, {}, configValidation=[{**RULE, "schemaFrom": schema}]):
        status = blocked(release(shop, "unverifiable", json.dumps({"checkout": {"enabled": True}})))
        assert [f["rule"] for f in status["validation"]] == ["ConfigSchemaUnreadable"]
        assert "no-such-schema" in status["validation"][0]["message"]
