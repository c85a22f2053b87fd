"""The API: generated CRD in sync with the models, and errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from specs import body

from guarded.api import crdgen, errors
from guarded.api.common import parse_duration
from guarded.api.rollout import GuardedRolloutSpec
from testbed import ROOT


def test_checked_in_crds_match_the_models() -> None:
    assert crdgen.main(["--check", str(ROOT / "crds")]) == 0, "run `make crds` and commit the result"


def test_the_crd_is_structural_and_has_what_kubectl_users_expect() -> None:
    crd = crdgen.guarded_rollout_crd()
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["gro"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Target", "Phase", "Wave", "Canary", "Message", "Age"]

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node, path
            for key in ("exclusiveMinimum", "exclusiveMaximum"):
                assert isinstance(node.get(key, False), bool), f"{path}.{key} must be a boolean in OpenAPI v3.0"
            if "properties" in node:
                assert node.get("type") == "object", path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(version["schema"], "schema")


def test_default_waves_are_one_pod_ten_fifty_hundred() -> None:
    waves = GuardedRolloutSpec.model_validate(body(image="shop:2")).waves
    assert [(w.replicas, w.weight) for w in waves] == [(1, None), (None, 10), (None, 50), (None, 100)]


@pytest.mark.parametrize("waves, field, words", [
    ([{"weight": 50}, {"weight": 10}], "spec.waves", "increase strictly"),
    ([{"weight": 0}], "spec.waves[0].weight", "greater than or equal to 1"),
    ([{"weight": 10, "replicas": 1}], "spec.waves[0]", "exactly one of weight or replicas"),
    ([{"weight": 10, "bake": "soon"}], "spec.waves[0].bake", "pattern"),
])
def test_invalid_waves_are_described_by_field(waves: list[dict], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        GuardedRolloutSpec.model_validate(body(image="shop:2", waves=waves))
    text = errors.describe(err.value)
    assert field in text and words in text, text


def test_an_empty_change_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        GuardedRolloutSpec.model_validate(body(image="shop:2", change={}))
    assert "spec.change" in errors.describe(err.value)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m30s", 90), ("2h", 7200), ("250ms", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
