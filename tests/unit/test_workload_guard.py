"""Guarded workloads, the pure part: what the webhook admits and what a recorded desire becomes."""

from __future__ import annotations

import copy
import json

import pytest

from guarded.api.policy import RolloutPolicySpec
from guarded.core.admission import ON_BEHALF_OF
from guarded.core.templates import content_hash
from guarded.core.workload_guard import (
    DESIRED_BY,
    DESIRED_HASH,
    DESIRED_TEMPLATE,
    RELEASE,
    ROLLED_BACK,
    SOURCE,
    Refused,
    admit_delete,
    admit_update,
    desire_of,
    guarding,
    next_step,
    release_name,
)


def deployment(image: str = "shop:1.0.0", **annotations: str) -> dict:
    return {"metadata": {"name": "shop", "namespace": "team", "annotations": dict(annotations),
                         "labels": {"app": "shop", "tier": "1"}},
            "spec": {"replicas": 4, "template": {"metadata": {"labels": {"app": "shop"}},
                                                 "spec": {"containers": [{"name": "app", "image": image}]}}}}


def set_image(d: dict, image: str) -> dict:
    new = copy.deepcopy(d)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return new


def policy(**spec: object) -> RolloutPolicySpec:
    return RolloutPolicySpec.model_validate({"guardWorkloads": True, **spec})


def test_only_policies_that_guard_workloads_and_select_the_deployment_guard_it() -> None:
    policies = [("tier1", policy(selector={"targetSelector": {"matchLabels": {"tier": "1"}}})),
                ("advisory", RolloutPolicySpec.model_validate({})),
                ("other-ns", policy(selector={"namespaceSelector": {"matchLabels": {"env": "prod"}}}))]
    assert guarding(policies, {"env": "dev"}, {"app": "shop", "tier": "1"}) == ["tier1"]
    assert guarding(policies, {"env": "prod"}, {"app": "shop", "tier": "1"}) == ["other-ns", "tier1"]
    assert guarding(policies, {"env": "dev"}, {"app": "shop", "tier": "2"}) == []


def test_a_template_change_keeps_the_running_template_and_records_the_desire_and_who() -> None:
    old = deployment()
    new = set_image(old, "shop:6.6.6")
    admitted = admit_update(old=old, new=new, user="alice", operator=False)
    assert admitted.template == old["spec"]["template"]
    desired = json.loads(admitted.annotations[DESIRED_TEMPLATE] or "")
    assert desired == new["spec"]["template"]
    assert admitted.annotations[DESIRED_HASH] == content_hash(new["spec"]["template"])
    assert admitted.annotations[DESIRED_BY] == "alice"
    assert "guarded" in admitted.note and "alice" in admitted.note


def test_scaling_and_metadata_edits_pass_and_the_operator_passes_everything() -> None:
    old = deployment()
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 9
    assert admit_update(old=old, new=scaled, user="alice", operator=False).template is None
    promoted = set_image(old, "shop:2.0.0")
    assert admit_update(old=old, new=promoted, user="guarded-operator", operator=True).template is None


@pytest.mark.parametrize("key", [DESIRED_BY, DESIRED_HASH, DESIRED_TEMPLATE, RELEASE, ROLLED_BACK])
def test_nobody_but_the_webhook_and_the_operator_writes_the_markers(key: str) -> None:
    old = deployment()
    forged = copy.deepcopy(old)
    forged["metadata"]["annotations"][key] = "bob"
    with pytest.raises(Refused, match=key):
        admit_update(old=old, new=forged, user="alice", operator=False)


def test_deleting_a_guarded_deployment_is_refused_unless_its_namespace_goes() -> None:
    with pytest.raises(Refused, match="deleting it and creating it again"):
        admit_delete(old=deployment(), operator=False, namespace_terminating=False)
    admit_delete(old=deployment(), operator=False, namespace_terminating=True)
    admit_delete(old=deployment(), operator=True, namespace_terminating=False)


def desired(image: str = "shop:6.6.6", by: str = "alice", **extra: str) -> dict:
    d = deployment(**extra)
    admitted = admit_update(old=d, new=set_image(d, image), user=by, operator=False)
    d["metadata"]["annotations"].update({k: v for k, v in admitted.annotations.items() if v is not None})
    return d


def test_a_desire_becomes_one_release_authored_by_the_requester_with_the_documentation() -> None:
    d = desired(**{"rollouts.guarded.dev/description": "new checkout", "rollouts.guarded.dev/ticket": "SHOP-1",
                   "rollouts.guarded.dev/ai-assisted": "true"})
    desire = desire_of(d)
    assert desire is not None and desire.by == "alice"
    step = next_step(d, {}, {"waves": [{"replicas": 1, "bake": "5s"}]})
    assert step.create is not None
    meta, spec = step.create["metadata"], step.create["spec"]
    assert meta["name"] == release_name("shop", desire.hash) and step.annotate == {RELEASE: meta["name"]}
    assert meta["annotations"][ON_BEHALF_OF] == "alice"
    assert meta["annotations"][SOURCE] == f"deployment/shop@{desire.hash}"
    assert spec["change"] == {"template": desire.template} and spec["target"] == {"name": "shop"}
    assert spec["description"] == "new checkout" and spec["ticket"] == "SHOP-1" and spec["aiAssisted"] is True
    assert spec["waves"] == [{"replicas": 1, "bake": "5s"}]


def test_applying_the_same_content_again_creates_nothing_new() -> None:
    d = desired()
    first = next_step(d, {}, {})
    assert first.create is not None
    d["metadata"]["annotations"][RELEASE] = first.create["metadata"]["name"]
    again = next_step(d, {first.create["metadata"]["name"]: {"status": {"phase": "Progressing"}}}, {})
    assert again.create is None and again.annotate == {}


def test_a_rolled_back_release_is_named_on_the_deployment_and_never_retried_by_the_same_content() -> None:
    d = desired()
    name = release_name("shop", content_hash(set_image(deployment(), "shop:6.6.6")["spec"]["template"]))
    step = next_step(d, {name: {"status": {"phase": "RolledBack", "rollbackReason": "AnalysisFailed"}}}, {})
    marker = step.annotate[ROLLED_BACK] or ""
    assert name in marker and "AnalysisFailed" in marker and "not retry" not in marker.split(":")[0]
    d["metadata"]["annotations"][ROLLED_BACK] = marker
    assert next_step(d, {}, {}).create is None, "even with the rolled-back release deleted"
    fixed = desired("shop:6.6.7")
    fixed["metadata"]["annotations"][ROLLED_BACK] = marker
    assert next_step(fixed, {}, {}).create is not None, "a fixed change is a new release"


def test_a_promoted_desire_clears_its_markers() -> None:
    d = desired()
    d["spec"]["template"] = json.loads(d["metadata"]["annotations"][DESIRED_TEMPLATE])
    step = next_step(d, {}, {})
    assert step.create is None
    assert {k for k, v in step.annotate.items() if v is None} >= {DESIRED_TEMPLATE, DESIRED_HASH, DESIRED_BY, RELEASE}


def test_a_desire_whose_annotations_do_not_agree_is_ignored() -> None:
    d = desired()
    d["metadata"]["annotations"][DESIRED_HASH] = "0" * 16
    assert desire_of(d) is None


def test_a_newer_change_supersedes_an_earlier_release_that_never_started() -> None:
    d = desired("shop:6.6.6")
    first = next_step(d, {}, {}).create
    assert first is not None
    newer = desired("shop:6.6.7")
    newer["metadata"]["annotations"][RELEASE] = first["metadata"]["name"]
    waiting = {first["metadata"]["name"]: {**first, "status": {"stage": "Pending", "phase": "AwaitingApproval"}}}
    step = next_step(newer, waiting, {})
    assert step.create is not None and step.supersede == first["metadata"]["name"]
    running = {first["metadata"]["name"]: {**first, "status": {"stage": "Bake", "phase": "Progressing"}}}
    assert next_step(newer, running, {}).supersede is None, "one under way finishes; the newer one waits for it"
    # The release marker names someone else's waiting rollout (a template change may carry any value in it):
    # it is not deleted.
    theirs = {first["metadata"]["name"]: {"metadata": {"name": first["metadata"]["name"]},
                                          "status": {"stage": "Pending", "phase": "AwaitingApproval"}}}
    assert next_step(newer, theirs, {}).supersede is None


def test_an_apply_naming_the_configmap_whose_version_the_pods_read_keeps_the_version() -> None:
    """A GitOps tool re-applies its manifest (`shop-config`) after a configuration release moved the pods to
    `shop-config-<hash>`: not a change; a real change in the same apply keeps the version too."""
    running = deployment_reading("shop-config-0123456789")
    applied = deployment_reading("shop-config")
    admitted = admit_update(old=running, new=applied, user="argocd", operator=False)
    assert admitted.annotations == {} and admitted.template == running["spec"]["template"]
    changed = deployment_reading("shop-config", image="shop:6.6.6")
    admitted = admit_update(old=running, new=changed, user="argocd", operator=False)
    desired = json.loads(admitted.annotations[DESIRED_TEMPLATE])
    assert desired["spec"]["volumes"] == running["spec"]["template"]["spec"]["volumes"]
    assert desired["spec"]["containers"][0]["image"] == "shop:6.6.6"


def deployment_reading(config: str, image: str = "shop:1.0.0") -> dict:
    return {"metadata": {"name": "shop", "namespace": "shop"}, "spec": {"template": {
        "metadata": {"labels": {"app": "shop"}},
        "spec": {"containers": [{"name": "app", "image": image}],
                 "volumes": [{"name": "settings", "configMap": {"name": config}}]}}}}
