"""Config validation: the policy's configValidation rules, their union over policies, and the pure checker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError
from world import T0

from guarded.api import crdgen, errors
from guarded.api.policy import ConfigValidation, RolloutPolicySpec
from guarded.core import policy
from guarded.core.config_checks import MAX_ERRORS_PER_KEY, ConfigContent, check, parse, schema_refs

SCHEMA_KEY = ("platform", "checkout-schema", "schema.json")
SCHEMA_FROM = {"namespace": "platform", "name": "checkout-schema", "key": "schema.json"}
CHECKOUT_SCHEMA = json.dumps({
    "type": "object",
    "required": ["checkout"],
    "properties": {
        "checkout": {"type": "object", "properties": {
            "enabled": {"type": "boolean"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5},
        }},
        "tiers": {"type": "array", "items": {"type": "string"}},
    },
})
FIELD = "spec.change.configMaps[0].data[settings.json]"


def rule(**body: object) -> ConfigValidation:
    return ConfigValidation.model_validate({"configMap": "shop-config", "key": "settings.json", "format": "json",
                                            "schemaFrom": SCHEMA_FROM, **body})


def content(data: dict[str, str], *, name: str = "shop-config", index: int = 0) -> ConfigContent:
    return ConfigContent(index=index, name=name, data=data)


def run(value: str | None, *, schema: str | None = CHECKOUT_SCHEMA, **body: object) -> list[tuple[str, str, str]]:
    data = {} if value is None else {"settings.json": value}
    findings = check([("shop-config-rules", rule(**body))], [content(data)], {SCHEMA_KEY: schema})
    return [(f.rule, f.field, f.message) for f in findings]


# --- the policy model ----------------------------------------------------------------------------------


def test_the_policy_reads_config_validation_by_its_wire_names() -> None:
    spec = RolloutPolicySpec.model_validate({"configValidation": [
        {"configMap": "shop-config", "key": "settings.json", "format": "json", "schemaFrom": SCHEMA_FROM},
        {"key": "app.yaml", "format": "yaml", "required": False},
    ]})
    first, second = spec.config_validation
    assert (first.config_map, first.key, first.format, first.required) == ("shop-config", "settings.json", "json",
                                                                           True)
    assert first.schema_from is not None and first.schema_from.ref == "platform/checkout-schema#schema.json"
    assert (second.config_map, second.schema_from, second.required) == (None, None, False)
    assert spec.to_wire()["configValidation"][0] == {
        "configMap": "shop-config", "key": "settings.json", "format": "json", "schemaFrom": SCHEMA_FROM,
        "required": True}
    assert RolloutPolicySpec.model_validate({}).config_validation == []


@pytest.mark.parametrize(("item", "field", "words"), [
    ({"key": "a/b", "format": "json"}, "spec.configValidation[0].key", "pattern"),
    ({"key": "", "format": "json"}, "spec.configValidation[0].key", "at least 1"),
    ({"key": "a.json", "format": "toml"}, "spec.configValidation[0].format", "'json' or 'yaml'"),
    ({"key": "a.json", "format": "json", "configMap": "Shop"}, "spec.configValidation[0].configMap", "pattern"),
    ({"key": "a.json", "format": "json", "schemaFrom": {**SCHEMA_FROM, "key": "schema json"}},
     "spec.configValidation[0].schemaFrom.key", "pattern"),
    ({"key": "a.json", "format": "json", "schemaFrom": {"name": "s", "key": "k"}},
     "spec.configValidation[0].schemaFrom.namespace", "required"),
    ({"key": "a.json", "format": "json", "schema": "x"}, "spec.configValidation[0].schema", "not permitted"),
])
def test_a_bad_config_validation_is_refused_by_field(item: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        RolloutPolicySpec.model_validate({"configValidation": [item]})
    text = errors.describe(err.value)
    assert field in text and words in text, text


def test_at_most_64_config_validation_rules() -> None:
    with pytest.raises(ValidationError):
        RolloutPolicySpec.model_validate({"configValidation": [{"key": f"k{i}", "format": "json"} for i in range(65)]})


def test_the_crd_carries_the_key_pattern_and_the_descriptions() -> None:
    spec = crdgen.rollout_policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    item = spec["properties"]["configValidation"]["items"]
    assert spec["properties"]["configValidation"]["maxItems"] == 64
    assert item["required"] == ["key", "format"]
    assert item["properties"]["key"]["pattern"] == "^[-._a-zA-Z0-9]+$"
    assert item["properties"]["schemaFrom"]["required"] == ["namespace", "name", "key"]
    assert all(p.get("description") for p in item["properties"].values())


# --- several policies ----------------------------------------------------------------------------------


def named(name: str, *items: dict, reset: dict | None = None) -> policy.NamedPolicy:
    body: dict = {"configValidation": list(items)}
    if reset is not None:
        body["safetyReset"] = reset
    return policy.NamedPolicy(name=name, spec=RolloutPolicySpec.model_validate(body))


def test_the_rules_of_every_matching_policy_apply_each_with_who_set_it() -> None:
    shared = {"configMap": "shop-config", "key": "settings.json", "format": "json", "schemaFrom": SCHEMA_FROM}
    company = named("company", {"key": "app.yaml", "format": "yaml", "required": False}, shared)
    shop = named("shop", shared, shared, {"configMap": "shop-config", "key": "flags.json", "format": "json"},
                 reset={"start": "2026-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z", "rules": {}})
    rules = policy.combine([company, shop], T0 + timedelta(days=1))
    assert rules.config_validation == {
        ConfigValidation.model_validate({"key": "app.yaml", "format": "yaml", "required": False}): ("company",),
        ConfigValidation.model_validate({"configMap": "shop-config", "key": "flags.json", "format": "json"}):
            ("shop",),
        ConfigValidation.model_validate(shared): ("company", "shop"),
    }
    described = policy.describe(rules)
    assert described is not None
    assert [(r.rule, r.value, r.set_by) for r in described.rules if r.rule == "configValidation"] == [
        ("configValidation", "*/app.yaml yaml optional", ["company"]),
        ("configValidation", "shop-config/flags.json json", ["shop"]),
        ("configValidation", "shop-config/settings.json json schema platform/checkout-schema#schema.json",
         ["company", "shop"]),
    ]
    pairs = policy.config_validations(rules)
    assert [(by, r.key) for by, r in pairs] == [("company", "app.yaml"), ("shop", "flags.json"),
                                                ("company,shop", "settings.json")]
    assert schema_refs(pairs) == {SCHEMA_KEY}


def test_no_policy_no_config_rules() -> None:
    rules = policy.combine([], T0)
    assert rules.config_validation == {} and policy.config_validations(rules) == []
    assert schema_refs([]) == set()


# --- the checker ---------------------------------------------------------------------------------------


def test_a_valid_config_has_no_findings() -> None:
    assert run('{"checkout": {"enabled": true, "retries": 3}, "tiers": ["gold"]}') == []


@pytest.mark.parametrize(("value", "body", "expected"), [
    (None, {}, [("ConfigKeyMissing", "no key settings.json")]),
    (None, {"required": False}, []),
    ('{"checkout": {"enabled": "yes"}}', {},
     [("ConfigSchema", "settings.json at /checkout/enabled: 'yes' is not of type 'boolean' "
                       "(schema path properties/checkout/properties/enabled/type")]),
    ('{"checkout": {"retries": 9}}', {},
     [("ConfigSchema", "settings.json at /checkout/retries: 9 is greater than the maximum of 5 "
                       "(schema path properties/checkout/properties/retries/maximum")]),
    ("{}", {}, [("ConfigSchema", "settings.json at (root): 'checkout' is a required property "
                                 "(schema path required")]),
    ('{"checkout": {"enabled": yes}}', {}, [("ConfigParse", "settings.json is not valid JSON: Expecting value "
                                                            "at line 1, column 26")]),
    ('{"checkout": {}}\n{}', {}, [("ConfigParse", "Extra data at line 2, column 1")]),
    ('{"checkout": {"retries": NaN}}', {}, [("ConfigParse", "NaN is not a JSON number")]),
    ("checkout:\n  enabled: true\n   retries: 1\n", {"format": "yaml"},
     [("ConfigParse", "settings.json is not valid YAML: mapping values are not allowed here at line 3, column 11")]),
    ("checkout:\n  enabled: no\n", {"format": "yaml"}, []),         # YAML 1.1: no is false
    ("checkout:\n  enabled: 2024-01-01\n", {"format": "yaml"},      # a timestamp stays text
     [("ConfigSchema", "settings.json at /checkout/enabled: '2024-01-01' is not of type 'boolean'")]),
    ("checkout: !!binary aGVsbG8=\n", {"format": "yaml"},
     [("ConfigParse", "the value at /checkout is a bytes, which JSON cannot hold")]),
    ("checkout: {}\n---\ncheckout: {}\n", {"format": "yaml"},
     [("ConfigParse", "expected a single document in the stream, but found another document at line 2, column 1")]),
    ("[1, 2]", {"schemaFrom": None}, []),                             # no schema: parsing is the whole check
    ("[1, 2", {"schemaFrom": None}, [("ConfigParse", "settings.json is not valid JSON")]),
])
def test_findings_name_the_rule_the_field_and_the_key(value: str | None, body: dict,
                                                      expected: list[tuple[str, str]]) -> None:
    found = run(value, **body)
    assert [(r, f) for r, f, _ in found] == [(r, FIELD) for r, _ in expected]
    for (_, _, message), (_, words) in zip(found, expected, strict=True):
        assert words in message, message


def test_a_schema_violation_names_the_policy_and_the_schema_configmap() -> None:
    [(_, _, message)] = run('{"checkout": {"enabled": 1}}')
    assert message == ("settings.json at /checkout/enabled: 1 is not of type 'boolean' (schema path "
                       "properties/checkout/properties/enabled/type; policy shop-config-rules, schema "
                       "platform/checkout-schema#schema.json)")


def test_a_missing_key_says_which_configmap_and_policy() -> None:
    assert run(None) == [("ConfigKeyMissing", FIELD, "ConfigMap shop-config has no key settings.json: policy "
                                                     "shop-config-rules requires it (json)")]


def test_every_violation_is_reported_in_path_order_up_to_ten() -> None:
    few = run(json.dumps({"checkout": {"enabled": 1, "retries": -1}, "tiers": [3, "ok", 1]}))
    assert [m.split(":")[0] for _, _, m in few] == [
        "settings.json at /checkout/enabled", "settings.json at /checkout/retries", "settings.json at /tiers/0",
        "settings.json at /tiers/2"]
    many = run(json.dumps({"checkout": {}, "tiers": list(range(13))}))
    assert len(many) == MAX_ERRORS_PER_KEY + 1
    assert [m.split(":")[0] for _, _, m in many[:3]] == [
        "settings.json at /tiers/0", "settings.json at /tiers/1", "settings.json at /tiers/2"]   # 2 before 10
    assert many[-1] == ("ConfigSchema", FIELD, "settings.json: ... and 3 more schema violations (policy "
                                               "shop-config-rules, schema platform/checkout-schema#schema.json)")


def test_messages_quote_a_value_only_in_an_excerpt_and_are_deterministic() -> None:
    long = "x" * 5000
    found = run(json.dumps({"checkout": {"enabled": long}}))
    assert found == run(json.dumps({"checkout": {"enabled": long}}))
    [(rule_name, _, message)] = found
    assert rule_name == "ConfigSchema" and long not in message and "xxx..." in message
    assert len(message) < 300
    [(_, _, parse_message)] = run('{"checkout": ' + long + "}")
    assert long not in parse_message and len(parse_message) < 200


def test_a_json_pointer_escapes_slash_and_tilde() -> None:
    schema = json.dumps({"additionalProperties": {"type": "integer"}})
    [(_, _, message)] = run(json.dumps({"a/b~c": "one"}), schema=schema)
    assert message.startswith("settings.json at /a~1b~0c: 'one' is not of type 'integer' "
                              "(schema path additionalProperties/type;")


@pytest.mark.parametrize(("schema", "rule_name", "words"), [
    (None, "ConfigSchemaUnreadable",
     "schema ConfigMap platform/checkout-schema key schema.json could not be read"),
    ('{"type": 5}', "ConfigSchemaInvalid",
     "schema ConfigMap platform/checkout-schema key schema.json is not a valid JSON Schema"),
    ("[1, 2]", "ConfigSchemaInvalid", "is not a JSON Schema (an object or a boolean)"),
    ("{: :", "ConfigSchemaInvalid", "is neither JSON nor YAML"),
    ('{"$ref": "https://schemas.example.invalid/checkout.json"}', "ConfigSchemaInvalid",
     "the schema's $ref https://schemas.example.invalid/checkout.json cannot be resolved"),
    ('{"$ref": "#/$defs/nowhere"}', "ConfigSchemaInvalid", "cannot be resolved"),
    ('{"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}', "ConfigSchema",
     "validation recursed too deeply"),
])
def test_a_schema_that_cannot_be_used_blocks_and_says_why(schema: str | None, rule_name: str, words: str) -> None:
    [(found_rule, field, message)] = run('{"checkout": {}}', schema=schema)
    assert (found_rule, field) == (rule_name, FIELD)
    assert words in message and "policy shop-config-rules" in message, message


def test_a_schema_the_shell_did_not_read_counts_as_unreadable() -> None:
    findings = check([("p", rule())], [content({"settings.json": "{}"})], {})
    assert [f.rule for f in findings] == ["ConfigSchemaUnreadable"]


def test_an_unreadable_schema_does_not_matter_when_nothing_is_checked_against_it() -> None:
    assert run(None, schema=None, required=False) == []
    assert [r for r, _, _ in run(None, schema=None)] == ["ConfigKeyMissing"]
    assert [r for r, _, _ in run("{", schema=None)] == ["ConfigParse"]


def test_a_schema_may_be_yaml_and_may_name_its_draft() -> None:
    yaml_schema = "type: object\nproperties:\n  retries: {type: integer}\n"
    assert [r for r, _, _ in run('{"retries": "3"}', schema=yaml_schema)] == ["ConfigSchema"]
    draft4 = json.dumps({"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 5,
                         "exclusiveMaximum": True})
    [(found, _, message)] = run("5", schema=draft4)
    assert found == "ConfigSchema" and "greater than or equal to the maximum of 5" in message
    assert [r for r, _, _ in run("5", schema=json.dumps({"maximum": 5, "exclusiveMaximum": True}))] == [
        "ConfigSchemaInvalid"]                                             # 2020-12: exclusiveMaximum is a number


def test_a_rule_applies_to_its_configmap_or_without_one_to_every_changed_configmap() -> None:
    changes = [content({"settings.json": "{"}, name="shop-config", index=0),
               content({"settings.json": "{"}, name="other-config", index=1)]
    named_rule = [("p", rule(schemaFrom=None))]
    every = [("p", rule(configMap=None, schemaFrom=None))]
    assert [f.field for f in check(named_rule, changes, {})] == [FIELD]
    assert [f.field for f in check(every, changes, {})] == [FIELD, "spec.change.configMaps[1].data[settings.json]"]
    assert check([("p", rule(configMap="billing"))], changes, {}) == []


@pytest.mark.parametrize(("text", "fmt", "words"), [
    ("[" * 100 + "]" * 100, "json", "nests deeper than 64 levels"),
    ("[" * 100_000 + "]" * 100_000, "json", "nests deeper than 64 levels"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7)),
     "yaml", "holds more than 1000000 values"),
])
def test_values_too_deep_or_too_large_do_not_parse(text: str, fmt: str, words: str) -> None:
    [(found, _, message)] = run(text, schemaFrom=None, format=fmt)
    assert found == "ConfigParse" and words in message, message


def test_yaml_keys_are_read_as_json_text() -> None:
    assert parse("1: one\nnull: none\n2.5: half\nname: x\n", "yaml") == {"1": "one", "null": "none", "2.5": "half",
                                                                         "name": "x"}
