"""Configuration rides the waves: the canary reads a versioned copy, the stable never changes until promotion.

Driven through the engine with the pure World (tests/unit/world.py), which keeps ConfigMaps and Secrets
and carries out the config actions as the shell does (kube/config.py).
"""

from __future__ import annotations

import json

from specs import QUICK, spec
from world import FakeConfig, World, pod_template

from guarded.api.stages import Stage
from guarded.core.actions import ApplyCanary, EnsureConfigVersion
from guarded.core.config_refs import content_digest, references, rewrite, version_name

OLD = {"data": {"settings.json": '{"checkout": true}', "region": "eu"}, "binaryData": {}}


def reading_config(secret: bool = False) -> dict:
    template = pod_template()
    template["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "shop-config"}}]
    template["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "shop-config"}}]
    if secret:
        template["spec"]["containers"][0]["env"] = [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "shop-secret", "key": "token"}}}]
    return template


def world(change: dict, *, secret: bool = False) -> World:
    w = World(spec(waves=QUICK, change=change), replicas=4)
    target = w.deployments["shop"]
    target.template = reading_config(secret)
    target.pods = [(w.template_hash(target.template), 0) for _ in range(4)]
    w.configs[("ConfigMap", "shop-config")] = FakeConfig(content=dict(OLD), uid="uid-cm")
    if secret:
        w.configs[("Secret", "shop-secret")] = FakeConfig(content={"data": {"token": "b2xk"}}, uid="uid-s")
        w.configs[("Secret", "shop-secret-next")] = FakeConfig(content={"data": {"token": "czNjcjN0"}}, uid="uid-n")
    return w


NEW = {"settings.json": '{"checkout": false}'}
CHANGE = {"configMaps": [{"name": "shop-config", "data": NEW}]}
VERSION = version_name("shop-config", content_digest({**OLD["data"], **NEW}, {}))


def test_the_canary_reads_the_version_and_the_stable_never_changes_until_promotion():
    w = world(CHANGE)
    before = json.dumps(w.deployments["shop"].template, sort_keys=True)
    w.run_until(stage=Stage.BAKE, wave=2)
    canary = w.deployments["shop-canary"].template
    assert references(canary) == {("ConfigMap", VERSION)}
    assert json.dumps(w.deployments["shop"].template, sort_keys=True) == before
    assert w.configs[("ConfigMap", "shop-config")].content == OLD   # the stable pods' view is unchanged
    assert w.configs[("ConfigMap", VERSION)].content["data"]["settings.json"] == '{"checkout": false}'
    assert [(c.kind, c.name, c.version) for c in w.status.config] == [("ConfigMap", "shop-config", VERSION)]


def test_the_version_exists_before_the_canary_that_reads_it():
    w = world(CHANGE)
    w.run_until(stage=Stage.SCALE_CANARY)
    first = next(d for d in w.log if any(isinstance(a, ApplyCanary) for a in d.actions))
    kinds = [type(a) for a in first.actions]
    assert kinds.index(EnsureConfigVersion) < kinds.index(ApplyCanary)


def test_promotion_moves_the_target_to_the_version_and_keeps_it_past_the_rollout():
    w = world(CHANGE)
    w.run_until_done()
    assert w.status.stage == Stage.SUCCEEDED
    assert references(w.deployments["shop"].template) == {("ConfigMap", VERSION)}
    assert "deployment:shop" in w.configs[("ConfigMap", VERSION)].owners   # outlives the GuardedRollout
    assert w.configs[("ConfigMap", "shop-config")].content["data"]["settings.json"] == '{"checkout": false}'


def test_a_rollback_removes_the_copy_and_leaves_the_target_reading_what_it_read():
    w = world(CHANGE)
    w.run_until(stage=Stage.BAKE, wave=1)
    w.ask("abort")
    w.run_until_done()
    assert w.status.stage == Stage.ROLLED_BACK
    assert ("ConfigMap", VERSION) not in w.configs
    assert references(w.deployments["shop"].template) == {("ConfigMap", "shop-config")}
    assert w.configs[("ConfigMap", "shop-config")].content == OLD


def test_a_second_change_replaces_the_first_version_in_the_target():
    w = world(CHANGE)
    w.run_until_done()
    w.spec = spec(waves=QUICK, change={"configMaps": [{"name": "shop-config", "data": {"region": "us"}}]})
    w.generation += 1
    w.run_until_done()
    assert w.status.stage == Stage.SUCCEEDED
    [(_, name)] = references(w.deployments["shop"].template)
    assert name != VERSION and name.startswith("shop-config-")
    assert w.configs[("ConfigMap", name)].content["data"] == {**OLD["data"], **NEW, "region": "us"}
    assert ("ConfigMap", VERSION) in w.configs   # the old version stays (owned by the Deployment)


def test_a_config_the_target_does_not_read_is_refused_naming_the_field():
    w = world({"configMaps": [{"name": "other-config", "data": {"a": "b"}}]})
    w.configs[("ConfigMap", "other-config")] = FakeConfig(content={"data": {}}, uid="uid-o")
    w.run_for(3)
    valid = next(c for c in w.status.conditions if c.type == "Valid")
    assert valid.status == "False"
    assert valid.message.startswith("spec.change.configMaps[0].name: the pod template of Deployment 'shop' "
                                    "does not read ConfigMap 'other-config'")
    assert "shop-canary" not in w.deployments


def test_a_missing_content_source_is_refused_naming_contentFrom():
    w = world({"configMaps": [{"name": "shop-config", "contentFrom": "shop-config-next"}]})
    w.run_for(3)
    valid = next(c for c in w.status.conditions if c.type == "Valid")
    assert valid.status == "False" and valid.message.startswith("spec.change.configMaps[0]: ")
    assert "'shop-config-next' not found" in valid.message
    assert w.status.stage == Stage.PENDING


def test_a_secret_change_rides_the_waves_and_its_data_is_nowhere_in_status_or_events():
    w = world({"secrets": [{"name": "shop-secret", "contentFrom": "shop-secret-next"}]}, secret=True)
    w.run_until(stage=Stage.BAKE, wave=2)
    refs = references(w.deployments["shop-canary"].template)
    [secret_version] = [n for k, n in refs if k == "Secret"]
    assert secret_version.startswith("shop-secret-") and ("ConfigMap", "shop-config") in refs
    assert w.configs[("Secret", secret_version)].content == {"data": {"token": "czNjcjN0"}}
    w.run_until_done()
    said = json.dumps([w.status.to_wire(), [e.message for d in w.log for e in d.events],
                       [repr(a) for d in w.log for a in d.actions]])
    assert "czNjcjN0" not in said and "s3cr3t" not in said
    assert references(w.deployments["shop"].template) >= {("Secret", secret_version)}


def test_rewrite_points_every_kind_of_reference_and_older_versions_at_the_new_one():
    template = reading_config(secret=True)
    template["spec"]["volumes"].append({"name": "p", "projected": {"sources": [
        {"configMap": {"name": "shop-config-0123456789"}}, {"secret": {"name": "shop-secret"}}]}})
    out = rewrite(template, {("ConfigMap", "shop-config"): "shop-config-aaaaaaaaaa",
                             ("Secret", "shop-secret"): "shop-secret-bbbbbbbbbb"})
    assert references(out) == {("ConfigMap", "shop-config-aaaaaaaaaa"), ("Secret", "shop-secret-bbbbbbbbbb")}
    assert references(template) == {("ConfigMap", "shop-config"), ("ConfigMap", "shop-config-0123456789"),
                                    ("Secret", "shop-secret")}   # the input is not changed
    assert rewrite(template, {("ConfigMap", "shop"): "shop-cccccccccc"}) == template  # a prefix is not a version


def test_an_object_squatting_a_versions_name_is_never_used_as_that_version():
    import pytest

    from guarded.core.config_refs import version_labels
    from guarded.kube.config import ContentChanged, verify_version
    data = {**OLD["data"], **NEW}
    real = {"metadata": {"name": VERSION, "labels": version_labels("shop-config")}, "immutable": True, "data": data}
    verify_version("ConfigMap", real, "shop-config")
    for squat, says in [
        ({**real, "immutable": False}, "not immutable"),
        ({**real, "data": {**data, "settings.json": '{"checkout": "evil"}'}}, "not what its name says"),
        ({**real, "metadata": {"name": VERSION, "labels": {}}}, "is not a version of"),
    ]:
        with pytest.raises(ContentChanged, match=says):
            verify_version("ConfigMap", squat, "shop-config")
