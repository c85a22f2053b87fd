"""Guarded configuration, the pure part: what the webhook does with an edit of a guarded ConfigMap or
Secret, and what the operator makes of the recorded desire."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from guarded.core.admission import ON_BEHALF_OF
from guarded.core.config_guard import (
    DESIRED_VERSION,
    ConfigAdmitted,
    ConfigStep,
    admit_config_update,
    config_desire_of,
    config_next_step,
    config_release_name,
)
from guarded.core.config_refs import CONFIG_OF_LABEL, content_digest, version_name
from guarded.core.templates import MANAGED_BY, MANAGED_BY_LABEL
from guarded.core.workload_guard import DESIRED_BY, GUARDED_LABEL, RELEASE, ROLLED_BACK, SOURCE, Refused

SHOP = {"level": "info", "limits.json": '{"rps": 100}'}
EDIT = {"level": "debug", "limits.json": '{"rps": 100}'}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config_map(data: dict[str, str] | None = None, binary: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict:
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shop-config", "namespace": "team", "labels": {GUARDED_LABEL: "true", "app": "shop"},
                     "annotations": dict(annotations or {})},
        "data": dict(SHOP if data is None else data)}
    if binary is not None:
        obj["binaryData"] = dict(binary)
    return obj


def secret(password: str = "hunter2", type_: str | None = "kubernetes.io/basic-auth") -> dict:
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shop-db", "namespace": "team", "labels": {GUARDED_LABEL: "true", "app": "shop"},
                     "annotations": {}},
        "data": {"username": b64("shop"), "password": b64(password)}}
    if type_ is not None:
        obj["type"] = type_
    return obj


def with_data(obj: dict, data: dict[str, str]) -> dict:
    new = copy.deepcopy(obj)
    new["data"] = dict(data)
    return new


def edit(obj: dict, data: dict[str, str], by: str = "alice") -> ConfigAdmitted:
    return admit_config_update(kind=obj["kind"], old=obj, new=with_data(obj, data), user=by, operator=False)


def desired(obj: dict, data: dict[str, str], by: str = "alice") -> dict:
    """The object as stored after the webhook admitted an edit: its content kept, the desire recorded."""
    admitted = edit(obj, data, by)
    assert admitted.restore is not None
    stored = copy.deepcopy(obj)
    for key in ("data", "binaryData"):
        stored.pop(key, None)
    stored.update({k: v for k, v in admitted.restore.items() if v})
    stored["metadata"]["annotations"].update({k: v for k, v in admitted.annotations.items() if v is not None})
    return stored


# -- the webhook -------------------------------------------------------------------------------------

def test_the_markers_keep_their_wire_names() -> None:
    # The ValidatingAdmissionPolicy (manifests/base/workload-policy.yaml) and kubectl users name them literally.
    assert DESIRED_VERSION == "rollouts.guarded.dev/desired-version"
    assert DESIRED_BY == "rollouts.guarded.dev/desired-by"


def test_the_operators_own_update_passes_untouched() -> None:
    old = config_map()
    new = with_data(old, EDIT)
    new["metadata"]["annotations"][RELEASE] = "shop-config-0123456789"
    assert admit_config_update(kind="ConfigMap", old=old, new=new, user="guarded-operator",
                               operator=True) == ConfigAdmitted()


def test_a_content_change_keeps_the_content_and_becomes_an_immutable_version_by_the_editor() -> None:
    old = config_map()
    admitted = edit(old, EDIT, by="alice")
    version = version_name("shop-config", content_digest(EDIT, {}))
    assert re.fullmatch(r"shop-config-[0-9a-f]{10}", version)
    assert admitted.version == {
        "apiVersion": "v1", "kind": "ConfigMap", "immutable": True, "data": EDIT,
        "metadata": {"name": version, "namespace": "team",
                     "labels": {CONFIG_OF_LABEL: "shop-config", MANAGED_BY_LABEL: MANAGED_BY}},
    }
    assert admitted.restore == {"data": SHOP, "binaryData": {}}
    assert admitted.annotations == {DESIRED_VERSION: version, DESIRED_BY: "alice"}
    assert "alice" in admitted.note and version in admitted.note and "shop-config" in admitted.note


def test_binary_data_rides_along_and_names_the_version() -> None:
    old = config_map(binary={"logo.png": b64("old")})
    new = copy.deepcopy(old)
    new["binaryData"] = {"logo.png": b64("new")}
    admitted = admit_config_update(kind="ConfigMap", old=old, new=new, user="alice", operator=False)
    assert admitted.version is not None
    assert admitted.version["metadata"]["name"] == version_name("shop-config",
                                                                content_digest(SHOP, {"logo.png": b64("new")}))
    assert admitted.version["data"] == SHOP and admitted.version["binaryData"] == {"logo.png": b64("new")}
    assert admitted.restore == {"data": SHOP, "binaryData": {"logo.png": b64("old")}}


@pytest.mark.parametrize(("type_", "kept"), [("kubernetes.io/basic-auth", "kubernetes.io/basic-auth"),
                                              (None, "Opaque")])
def test_a_secret_edit_keeps_its_type_carries_only_data_and_never_shows_a_value(type_: str | None,
                                                                                 kept: str) -> None:
    old = secret("hunter2", type_)
    new_data = {"username": b64("shop"), "password": b64("s3cr3t-n3w")}
    admitted = edit(old, new_data, by="alice")
    version = version_name("shop-db", content_digest(new_data, None))
    assert admitted.version is not None
    assert admitted.version["type"] == kept
    assert admitted.version["data"] == new_data and "binaryData" not in admitted.version
    assert admitted.version["immutable"] is True and admitted.version["metadata"]["name"] == version
    assert admitted.restore == {"data": old["data"]}
    assert admitted.annotations == {DESIRED_VERSION: version, DESIRED_BY: "alice"}
    assert "alice" in admitted.note
    for value in ("hunter2", "s3cr3t-n3w", b64("hunter2"), b64("s3cr3t-n3w"), b64("shop")):
        assert value not in admitted.note, value


def forge(key: str, how: str) -> Callable[[dict], None]:
    def apply(annotations: dict) -> None:
        if how == "remove":
            annotations.pop(key)
        else:
            annotations[key] = "bob" if how == "change" else "shop-config-0123456789"
    return apply


@pytest.mark.parametrize("key", [DESIRED_VERSION, DESIRED_BY, RELEASE, ROLLED_BACK])
@pytest.mark.parametrize("how", ["add", "change", "remove"])
def test_with_the_same_content_nobody_but_guarded_rollouts_writes_the_markers(key: str, how: str) -> None:
    markers = {} if how == "add" else {DESIRED_VERSION: "shop-config-0123456789", DESIRED_BY: "alice",
                                       RELEASE: "shop-config-0123456789", ROLLED_BACK: "shop-config-0123456789 x: y"}
    old = config_map(annotations=markers)
    new = copy.deepcopy(old)
    forge(key, how)(new["metadata"]["annotations"])
    with pytest.raises(Refused, match=re.escape(f"metadata.annotations[{key}]")):
        admit_config_update(kind="ConfigMap", old=old, new=new, user="alice", operator=False)


@pytest.mark.parametrize("change", [
    pytest.param(lambda o: o["metadata"]["labels"].update(team="payments"), id="a label"),
    pytest.param(lambda o: o["metadata"]["annotations"].update(note="hello"), id="an annotation"),
    pytest.param(lambda o: o["metadata"]["labels"].pop("app"), id="a label removed"),
    pytest.param(lambda o: None, id="nothing"),
])
def test_metadata_only_edits_pass_untouched(change: Callable[[dict], None]) -> None:
    for old in (config_map(), secret()):
        new = copy.deepcopy(old)
        change(new)
        assert admit_config_update(kind=old["kind"], old=old, new=new, user="alice",
                                   operator=False) == ConfigAdmitted()


@pytest.mark.parametrize("which", ["old", "new", "both"])
def test_an_immutable_object_is_left_to_the_api_server(which: str) -> None:
    old = config_map()
    new = with_data(old, EDIT)
    if which in ("old", "both"):
        old["immutable"] = True
    if which in ("new", "both"):
        new["immutable"] = True
    assert admit_config_update(kind="ConfigMap", old=old, new=new, user="alice", operator=False) == ConfigAdmitted()


def test_versions_are_content_addressed() -> None:
    old = config_map()
    by_alice, by_bob = edit(old, EDIT, by="alice"), edit(old, dict(reversed(list(EDIT.items()))), by="bob")
    assert by_alice.version is not None and by_bob.version is not None
    assert by_alice.version == by_bob.version, "the same content names the same version (whoever, key order)"
    assert by_alice.annotations[DESIRED_BY] == "alice" and by_bob.annotations[DESIRED_BY] == "bob"
    other = edit(old, {**EDIT, "level": "warn"})
    assert other.version is not None
    assert other.version["metadata"]["name"] != by_alice.version["metadata"]["name"]
    again = edit(desired(old, {**EDIT, "level": "warn"}), EDIT)
    assert again.version == by_alice.version, "an edit of an object with a pending desire: the same content"


def test_a_long_name_still_makes_a_valid_version_name() -> None:
    old = config_map()
    old["metadata"]["name"] = "c" * 253
    admitted = edit(old, EDIT)
    assert admitted.version is not None
    name = admitted.version["metadata"]["name"]
    assert len(name) <= 253 and re.fullmatch(r"c+-[0-9a-f]{10}", name)


# -- the operator ------------------------------------------------------------------------------------

DOCS = {"rollouts.guarded.dev/description": "debug logging for the checkout incident",
        "rollouts.guarded.dev/ticket": "SHOP-42", "rollouts.guarded.dev/rollback-plan": "revert the edit"}


def release_of(obj: dict) -> str:
    desire = config_desire_of(obj["kind"], obj)
    assert desire is not None
    return config_release_name(desire)


def made_of(obj: dict, **status: str) -> dict:
    """A GuardedRollout the operator made of the object's desire, with this status."""
    desire = config_desire_of(obj["kind"], obj)
    assert desire is not None
    return {"metadata": {"name": config_release_name(desire), "annotations": {
                SOURCE: f"{obj['kind'].lower()}/{desire.name}@{desire.version}"}},
            "status": dict(status)}


def test_no_desire_nothing_to_do() -> None:
    assert config_next_step("ConfigMap", config_map(), ["shop"], {}, {}) == ConfigStep()
    half = config_map(annotations={DESIRED_VERSION: "shop-config-0123456789"})
    assert config_next_step("ConfigMap", half, ["shop"], {}, {}) == ConfigStep(), "no desired-by: no desire"


def test_a_desire_becomes_one_release_authored_by_the_editor_with_the_documentation() -> None:
    obj = desired(config_map(annotations={**DOCS, "rollouts.guarded.dev/ai-assisted": "true"}), EDIT, by="alice")
    version = version_name("shop-config", content_digest(EDIT))
    step = config_next_step("ConfigMap", obj, ["shop"], {}, {})
    assert step.create is not None and step.supersede is None
    meta, spec = step.create["metadata"], step.create["spec"]
    assert step.create["apiVersion"] == "rollouts.guarded.dev/v1alpha1" and step.create["kind"] == "GuardedRollout"
    assert meta["name"] == f"shop-config-{version.rsplit('-', 1)[1]}" and meta["namespace"] == "team"
    assert step.annotate == {RELEASE: meta["name"]}
    assert meta["labels"] == {"rollouts.guarded.dev/from-apply": "true"}
    assert meta["annotations"] == {ON_BEHALF_OF: "alice", SOURCE: f"configmap/shop-config@{version}"}
    assert spec["target"] == {"name": "shop"} and "consumers" not in spec
    assert spec["change"] == {"configMaps": [{"name": "shop-config", "contentFrom": version}]}
    assert spec["description"] == DOCS["rollouts.guarded.dev/description"]
    assert spec["ticket"] == "SHOP-42" and spec["rollbackPlan"] == "revert the edit" and spec["aiAssisted"] is True


@pytest.mark.parametrize(("value", "expected"), [("true", True), (" True ", True), ("false", False),
                                                 ("yes", False), ("", False)])
def test_ai_assisted_is_a_boolean(value: str, expected: bool) -> None:
    obj = desired(config_map(annotations={"rollouts.guarded.dev/ai-assisted": value}), EDIT)
    step = config_next_step("ConfigMap", obj, ["shop"], {}, {})
    assert step.create is not None and step.create["spec"]["aiAssisted"] is expected


def test_without_documentation_annotations_the_spec_has_no_documentation_fields() -> None:
    step = config_next_step("ConfigMap", desired(config_map(), EDIT), ["shop"], {}, {})
    assert step.create is not None
    assert set(step.create["spec"]) == {"target", "change"}


def test_every_consumer_moves_in_one_release_the_first_by_name_is_the_target() -> None:
    step = config_next_step("ConfigMap", desired(config_map(), EDIT), ["web", "api", "shop"], {}, {})
    assert step.create is not None
    assert step.create["spec"]["target"] == {"name": "api"}
    assert step.create["spec"]["consumers"] == [{"name": "shop"}, {"name": "web"}]


def test_a_secret_edit_is_released_as_spec_change_secrets() -> None:
    new_data = {"username": b64("shop"), "password": b64("n3w")}
    obj = desired(secret(), new_data, by="carol")
    version = version_name("shop-db", content_digest(new_data))
    step = config_next_step("Secret", obj, ["shop"], {}, {})
    assert step.create is not None
    assert step.create["spec"]["change"] == {"secrets": [{"name": "shop-db", "contentFrom": version}]}
    assert step.create["metadata"]["annotations"] == {ON_BEHALF_OF: "carol", SOURCE: f"secret/shop-db@{version}"}
    assert b64("n3w") not in str(step.create), "the release names the version, never its values"


def test_release_defaults_are_merged_and_none_values_dropped() -> None:
    defaults = {"waves": [{"replicas": 1, "bake": "5m"}], "analysis": None, "progressDeadline": "30m"}
    step = config_next_step("ConfigMap", desired(config_map(annotations=DOCS), EDIT), ["shop"], {}, defaults)
    assert step.create is not None
    spec = step.create["spec"]
    assert spec["waves"] == [{"replicas": 1, "bake": "5m"}] and spec["progressDeadline"] == "30m"
    assert "analysis" not in spec
    assert spec["change"]["configMaps"][0]["name"] == "shop-config" and spec["target"] == {"name": "shop"}
    assert spec["ticket"] == "SHOP-42"


# The matrix of the operator's steps for one pending edit (`EDIT` by alice of `shop-config`).
# Each row: the object's extra annotations, the namespace's GuardedRollouts, the consumers, and the step.
# "$R" stands for the release of the edit, "$V" for its version, "$E" for an earlier release.
CLEAR: dict[str, str | None] = {DESIRED_VERSION: None, DESIRED_BY: None, RELEASE: None, ROLLED_BACK: None}
Rollouts = Callable[[dict], dict[str, dict]]
MATRIX: list[Any] = [
    pytest.param({}, lambda o: {}, ["shop"], "create", {RELEASE: "$R"}, None, id="no release: create it"),
    pytest.param({}, lambda o: {}, [], None, {}, None, id="no consumers: nothing"),
    pytest.param({}, lambda o: {"$R": made_of(o, stage="Bake", phase="Progressing")}, ["shop"],
                 None, {RELEASE: "$R"}, None, id="running, unmarked: the marker only"),
    pytest.param({RELEASE: "$R"}, lambda o: {"$R": made_of(o, stage="Bake", phase="Progressing")}, ["shop"],
                 None, {}, None, id="running, marked: nothing"),
    pytest.param({RELEASE: "$R"}, lambda o: {"$R": made_of(o, phase="Succeeded")}, ["shop"],
                 None, CLEAR, None, id="succeeded: clear the markers"),
    pytest.param({RELEASE: "$R"}, lambda o: {"$R": made_of(o, phase="Succeeded")}, [],
                 None, CLEAR, None, id="succeeded, no consumers left: clear"),
    pytest.param({RELEASE: "$R", ROLLED_BACK: "$V $R: AnalysisFailed; ..."}, lambda o: {}, ["shop"],
                 None, {}, None, id="rolled back, release deleted: not retried"),
    pytest.param({RELEASE: "$R", ROLLED_BACK: "$V $R: AnalysisFailed; ..."},
                 lambda o: {"$R": made_of(o, phase="RolledBack", rollbackReason="AnalysisFailed")}, ["shop"],
                 None, {}, None, id="rolled back and marked: nothing"),
    pytest.param({ROLLED_BACK: "shop-config-0123456789 shop-config-0123456789: x"}, lambda o: {}, ["shop"],
                 "create", {RELEASE: "$R"}, None, id="an older version rolled back: the new edit is released"),
]


def resolve(value: Any, obj: dict) -> Any:
    desire = config_desire_of(obj["kind"], obj)
    assert desire is not None
    if isinstance(value, str):
        return value.replace("$R", config_release_name(desire)).replace("$V", desire.version)
    if isinstance(value, dict):
        return {resolve(k, obj): resolve(v, obj) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("annotations", "rollouts", "consumers", "create", "annotate", "supersede"), MATRIX)
def test_the_operators_step(annotations: dict[str, str], rollouts: Rollouts, consumers: list[str],
                            create: str | None, annotate: dict, supersede: str | None) -> None:
    obj = desired(config_map(), EDIT, by="alice")
    obj["metadata"]["annotations"].update(resolve(annotations, obj))
    step = config_next_step("ConfigMap", obj, consumers, resolve(rollouts(obj), obj), {})
    if create is None:
        assert step.create is None
    else:
        assert step.create is not None and step.create["metadata"]["name"] == release_of(obj)
    assert step.annotate == resolve(annotate, obj)
    assert step.supersede == supersede


@pytest.mark.parametrize(("status", "why"), [({"rollbackReason": "AnalysisFailed"}, "AnalysisFailed"),
                                             ({}, "rolled back")])
def test_a_rolled_back_release_is_marked_with_its_reason_and_not_retried(status: dict, why: str) -> None:
    obj = desired(config_map(), EDIT)
    name, version = release_of(obj), obj["metadata"]["annotations"][DESIRED_VERSION]
    step = config_next_step("ConfigMap", obj, ["shop"], {name: made_of(obj, phase="RolledBack", **status)}, {})
    assert step.create is None and step.supersede is None and set(step.annotate) == {ROLLED_BACK}
    marker = step.annotate[ROLLED_BACK] or ""
    assert marker.startswith(f"{version} {name}: {why};") and "does not retry" in marker
    obj["metadata"]["annotations"][ROLLED_BACK] = marker
    assert config_next_step("ConfigMap", obj, ["shop"], {}, {}) == ConfigStep(), "even with the release deleted"
    fixed = desired(obj, {**EDIT, "level": "warn"})
    assert fixed["metadata"]["annotations"][ROLLED_BACK] == marker
    assert config_next_step("ConfigMap", fixed, ["shop"], {}, {}).create is not None, "a fixed edit is a new release"


def test_the_same_content_back_clears_the_markers() -> None:
    obj = desired(config_map(), EDIT)
    obj["metadata"]["annotations"][RELEASE] = release_of(obj)
    promoted = with_data(obj, EDIT)   # the object mirrors the version (promotion), the release maybe gone
    assert config_next_step("ConfigMap", promoted, ["shop"], {}, {}) == ConfigStep(annotate=CLEAR)
    assert config_next_step("ConfigMap", promoted, [], {}, {}) == ConfigStep(annotate=CLEAR)


@pytest.mark.parametrize(("earlier_status", "superseded"), [
    ({"stage": "Pending", "phase": "AwaitingApproval"}, True),
    ({}, True),
    ({"stage": "Bake", "phase": "Progressing"}, False),
    ({"stage": "RolledBack", "phase": "RolledBack"}, False),
])
def test_a_newer_edit_supersedes_an_earlier_release_that_never_started(earlier_status: dict,
                                                                       superseded: bool) -> None:
    first = desired(config_map(), EDIT, by="alice")
    earlier = config_next_step("ConfigMap", first, ["shop"], {}, {}).create
    assert earlier is not None
    earlier["status"] = earlier_status
    first["metadata"]["annotations"][RELEASE] = earlier["metadata"]["name"]
    newer = desired(first, {**EDIT, "level": "warn"}, by="bob")
    assert newer["metadata"]["annotations"][RELEASE] == earlier["metadata"]["name"]
    step = config_next_step("ConfigMap", newer, ["shop"], {earlier["metadata"]["name"]: earlier}, {})
    assert step.create is not None and step.create["metadata"]["annotations"][ON_BEHALF_OF] == "bob"
    assert step.create["metadata"]["name"] != earlier["metadata"]["name"]
    assert step.annotate == {RELEASE: step.create["metadata"]["name"]}
    assert step.supersede == (earlier["metadata"]["name"] if superseded else None)


@pytest.mark.parametrize("source", ["deployment/shop@0123456789abcdef",
                                    "configmap/other-config@other-config-0123456789",
                                    "secret/shop-config@shop-config-0123456789", None])
def test_only_a_release_made_of_this_object_is_superseded(source: str | None) -> None:
    # The release marker names someone else's waiting release (written with the edit, or left stale):
    # a newer edit of this object must not delete it.
    obj = desired(config_map(), EDIT)
    obj["metadata"]["annotations"][RELEASE] = "theirs"
    theirs: dict[str, Any] = {"metadata": {"name": "theirs", "annotations": {}},
                              "status": {"stage": "Pending", "phase": "AwaitingApproval"}}
    if source is not None:
        theirs["metadata"]["annotations"][SOURCE] = source
    step = config_next_step("ConfigMap", obj, ["shop"], {"theirs": theirs}, {})
    assert step.create is not None and step.supersede is None
