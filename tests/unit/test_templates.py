"""Pure builders: the changed template, the canary Deployment, strategic merge."""

from __future__ import annotations

import pytest

from guarded.api.rollout import Change
from guarded.core.templates import ChangeError, canary_deployment, changed_template, strategic_merge


def template() -> dict:
    return {
        "metadata": {"labels": {"app": "shop"}},
        "spec": {"containers": [
            {"name": "app", "image": "shop:1", "env": [{"name": "MODE", "value": "a"}]},
            {"name": "proxy", "image": "envoy:1"},
        ]},
    }


def test_a_change_sets_image_and_env_of_the_named_container_only() -> None:
    change = Change.model_validate({"containers": [
        {"name": "app", "image": "shop:2", "env": [{"name": "MODE", "value": "b"}, {"name": "NEW", "value": "1"}]}]})
    out = changed_template(template(), change, "rev1")
    app, proxy = out["spec"]["containers"]
    assert app["image"] == "shop:2"
    assert app["env"] == [{"name": "MODE", "value": "b"}, {"name": "NEW", "value": "1"}]
    assert proxy == {"name": "proxy", "image": "envoy:1"}
    assert out["metadata"]["annotations"]["rollouts.guarded.dev/revision"] == "rev1"


def test_the_input_template_is_not_mutated() -> None:
    original = template()
    changed_template(original, Change.model_validate({"containers": [{"name": "app", "image": "x:9"}]}), "r")
    assert original == template()


def test_an_unknown_container_names_the_field_and_the_known_ones() -> None:
    with pytest.raises(ChangeError) as err:
        changed_template(template(), Change.model_validate({"containers": [{"name": "db", "image": "x:1"}]}), "r")
    assert "spec.change.containers[0].name" in str(err.value)
    assert "app, proxy" in str(err.value)


def test_strategic_merge_merges_containers_by_name_and_null_deletes() -> None:
    patch = {"metadata": {"annotations": {"sim/order-rate": "0.01"}},
             "spec": {"containers": [{"name": "proxy", "image": "envoy:2"}], "nodeSelector": None}}
    base = template()
    base["spec"]["nodeSelector"] = {"zone": "a"}
    out = strategic_merge(base, patch)
    assert [c["image"] for c in out["spec"]["containers"]] == ["shop:1", "envoy:2"]
    assert "nodeSelector" not in out["spec"]
    assert out["metadata"]["annotations"] == {"sim/order-rate": "0.01"}


def test_the_canary_shares_the_targets_selector_labels_and_is_owned_by_the_rollout() -> None:
    d = canary_deployment(rollout_name="release", rollout_uid="u-1", namespace="ns", target_name="shop",
                          target_selector={"matchLabels": {"app": "shop"}}, template=template(), replicas=3,
                          revision="r")
    assert d["metadata"]["name"] == "shop-canary"
    assert d["spec"]["template"]["metadata"]["labels"]["app"] == "shop"
    assert d["spec"]["selector"]["matchLabels"] == {"app": "shop", "rollouts.guarded.dev/role": "canary"}
    assert d["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
