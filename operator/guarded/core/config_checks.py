"""Configuration validators before wave 1: a key of a changed ConfigMap parses and meets a JSON Schema. Pure.

A RolloutPolicy's spec.configValidation says which key of which ConfigMap a governed rollout changes
must parse (JSON or YAML) and, optionally, validate against a JSON Schema the platform team keeps in a
ConfigMap (spec.configValidation[].schemaFrom). The shell reads what `schema_refs` names and passes the
texts in (None for one it could not read) with the new content of each changed ConfigMap; `check`
returns the findings, each naming the rule, the field to fix and, in its message, the key, the policy
and the schema. A schema that cannot be read or is not a valid schema blocks too: an unchecked change
must not pass as a checked one.

YAML is read as Kubernetes reads it: safe (no tags beyond the YAML 1.1 core types), timestamps kept as
text, keys that are numbers, booleans or null taken as their JSON text; a value JSON cannot hold (a
!!binary, a !!set) is a parse error. JSON is strict: NaN and Infinity are refused. The schema is
Draft 2020-12 unless its $schema names another draft; `format` is an annotation, as the drafts say;
a $ref resolves only inside the schema (and to the drafts' own metaschemas), never over the network.

Messages are deterministic (they are written to the status on every reconcile) and quote at most an
excerpt of EXCERPT characters of a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import referencing.exceptions
import yaml
from jsonschema import Draft202012Validator, SchemaError, ValidationError, validators
from jsonschema_specifications import REGISTRY as METASCHEMAS

from guarded.api.policy import ConfigValidation, SchemaRef
from guarded.api.rollout import ValidationFinding

MAX_ERRORS_PER_KEY = 10  # schema violations reported per key and rule; the rest are counted
EXCERPT = 80  # the longest quote of a value in a message
MAX_DEPTH = 64  # a parsed value nesting deeper is refused (and validation stays within Python's recursion limit)
MAX_NODES = 1_000_000  # a parsed value larger than this is refused (a YAML alias bomb expands past it)

SchemaKey = tuple[str, str, str]  # (namespace, name, key) of a SchemaRef


@dataclass(frozen=True)
class ConfigContent:
    index: int  # position in spec.change.configMaps
    name: str  # the ConfigMap's name (the source the rollout changes)
    data: Mapping[str, str]  # the new content


def schema_key(ref: SchemaRef) -> SchemaKey:
    return (ref.namespace, ref.name, ref.key)


def schema_refs(rules: Iterable[tuple[str, ConfigValidation]]) -> set[SchemaKey]:
    """The schema ConfigMap keys the shell must read for these rules."""
    return {schema_key(rule.schema_from) for _, rule in rules if rule.schema_from is not None}


def applies(rule: ConfigValidation, change: ConfigContent) -> bool:
    return rule.config_map is None or rule.config_map == change.name


def check(rules: Sequence[tuple[str, ConfigValidation]], changes: Sequence[ConfigContent],
          schemas: Mapping[SchemaKey, str | None]) -> list[ValidationFinding]:
    """The findings of every rule (policy name, rule) on every changed ConfigMap it applies to, in the order
    of the changes, then of the rules. A schema missing from `schemas` counts as unreadable."""
    loaded: dict[SchemaKey, _Schema] = {}
    findings: list[ValidationFinding] = []
    for change in changes:
        for policy, rule in rules:
            if applies(rule, change):
                findings.extend(_check_key(policy, rule, change, schemas, loaded))
    return findings


def _check_key(policy: str, rule: ConfigValidation, change: ConfigContent, schemas: Mapping[SchemaKey, str | None],
               loaded: dict[SchemaKey, _Schema]) -> list[ValidationFinding]:
    field = f"spec.change.configMaps[{change.index}].data[{rule.key}]"
    value = change.data.get(rule.key)
    if value is None:
        if not rule.required:
            return []
        return [ValidationFinding(rule="ConfigKeyMissing", field=field, message=(
            f"ConfigMap {change.name} has no key {rule.key}: policy {policy} requires it ({rule.format})"))]
    try:
        instance = parse(value, rule.format)
    except Unparsable as err:
        return [ValidationFinding(rule="ConfigParse", field=field, message=(
            f"{rule.key} is not valid {rule.format.upper()}: {err} (policy {policy})"))]
    ref = rule.schema_from
    if ref is None:
        return []
    key = schema_key(ref)
    if key not in loaded:
        loaded[key] = _load_schema(schemas.get(key))
    schema = loaded[key]
    if schema.validator is None:
        return [ValidationFinding(rule=schema.rule, field=field, message=(
            f"schema ConfigMap {ref.namespace}/{ref.name} key {ref.key} {schema.problem}; {rule.key} cannot be "
            f"checked (policy {policy})"))]
    return _violations(schema.validator, instance, field=field, where=f"policy {policy}, schema {ref.ref}",
                       key=rule.key)


def _violations(validator: Any, instance: Any, *, field: str, where: str, key: str) -> list[ValidationFinding]:
    try:
        errors = sorted(validator.iter_errors(instance), key=_error_order)
    except referencing.exceptions.Unresolvable as err:
        return [ValidationFinding(rule="ConfigSchemaInvalid", field=field, message=(
            f"{key}: the schema's $ref {_excerpt(str(getattr(err, 'ref', '')))} cannot be resolved (only "
            f"references inside the schema can) ({where})"))]
    except RecursionError:
        return [ValidationFinding(rule="ConfigSchema", field=field, message=(
            f"{key}: validation recursed too deeply (the value nests too deeply for the schema, or the schema's "
            f"$refs loop) ({where})"))]
    out = [ValidationFinding(rule="ConfigSchema", field=field, message=(
        f"{key} at {pointer(e.absolute_path) or '(root)'}: {_error_message(e)} "
        f"(schema path {pointer(e.absolute_schema_path)[1:]}; {where})")) for e in errors[:MAX_ERRORS_PER_KEY]]
    if len(errors) > MAX_ERRORS_PER_KEY:
        out.append(ValidationFinding(rule="ConfigSchema", field=field, message=(
            f"{key}: ... and {len(errors) - MAX_ERRORS_PER_KEY} more schema violations ({where})")))
    return out


# --- parsing -------------------------------------------------------------------------------------------


class Unparsable(ValueError):
    """The text does not parse, or parses to what JSON cannot hold; the message says where."""


class _YamlLoader(yaml.SafeLoader):
    """The safe loader, but a timestamp stays text (as Kubernetes reads YAML into JSON)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse(text: str, format: str) -> Any:
    """The JSON value in `text` (format "json" or "yaml"), or Unparsable."""
    try:
        value = _parse_json(text) if format == "json" else yaml.load(text, Loader=_YamlLoader)
    except RecursionError:
        raise Unparsable(f"nests deeper than {MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = ", ".join(part for part in (err.context, err.problem) if part) or "not YAML"
        if mark is None:
            raise Unparsable(problem) from None
        raise Unparsable(f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
                         f" near {_near(text, mark.index)}") from None
    except yaml.YAMLError as err:
        raise Unparsable(_excerpt(str(err))) from None
    budget = [MAX_NODES]
    return _plain(value, "", 0, budget)


def _parse_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise Unparsable(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as err:
        raise Unparsable(f"{err.msg} at line {err.lineno}, column {err.colno} near {_near(text, err.pos)}") from None


def _plain(value: Any, path: str, depth: int, budget: list[int]) -> Any:
    """`value` as JSON holds it: string keys, and nothing but objects, arrays, strings, numbers, booleans
    and null; at most MAX_DEPTH levels and MAX_NODES values."""
    budget[0] -= 1
    if budget[0] < 0:
        raise Unparsable(f"holds more than {MAX_NODES} values (YAML aliases count each time they are used)")
    if depth > MAX_DEPTH and isinstance(value, dict | list):
        raise Unparsable(f"nests deeper than {MAX_DEPTH} levels at {_excerpt(path)}")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = _key_text(key, path)
            out[name] = _plain(item, f"{path}/{_escape(name)}", depth + 1, budget)
        return out
    if isinstance(value, list):
        return [_plain(item, f"{path}/{i}", depth + 1, budget) for i, item in enumerate(value)]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise Unparsable(f"the value at {path or '(root)'} is a {type(value).__name__}, which JSON cannot hold")


def _key_text(key: Any, path: str) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, int | float | bool):
        return json.dumps(key)
    raise Unparsable(f"a key at {path or '(root)'} is a {type(key).__name__}; JSON keys are text")


# --- schemas -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Schema:
    validator: Any = None  # a jsonschema Validator, or None with the rule and the problem
    rule: str = ""
    problem: str = ""


def _load_schema(text: str | None) -> _Schema:
    if text is None:
        return _Schema(rule="ConfigSchemaUnreadable", problem="could not be read (missing ConfigMap or key)")
    try:
        schema = parse(text, "json")
    except Unparsable:
        try:
            schema = parse(text, "yaml")
        except Unparsable as err:
            return _Schema(rule="ConfigSchemaInvalid", problem=f"is neither JSON nor YAML: {err}")
    if not isinstance(schema, dict | bool):
        return _Schema(rule="ConfigSchemaInvalid", problem="is not a JSON Schema (an object or a boolean)")
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as err:
        return _Schema(rule="ConfigSchemaInvalid", problem=(
            f"is not a valid JSON Schema: {_excerpt(err.message)} at {pointer(err.absolute_path) or '(root)'}"))
    return _Schema(validator=cls(schema, registry=METASCHEMAS))


# --- text ----------------------------------------------------------------------------------------------


def pointer(path: Iterable[str | int]) -> str:
    """A JSON pointer (RFC 6901): "/checkout/enabled"; "" is the whole value."""
    return "".join(f"/{_escape(str(part))}" for part in path)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _error_order(error: ValidationError) -> tuple:
    def parts(path: Iterable[str | int]) -> tuple:
        return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path)

    return parts(error.absolute_path), parts(error.absolute_schema_path), error.message


def _error_message(error: ValidationError) -> str:
    """The validator's message, with the value it quotes cut to an excerpt."""
    message = error.message
    if len(message) > EXCERPT:
        quoted = repr(error.instance)
        if len(quoted) > EXCERPT and quoted in message:
            message = message.replace(quoted, _excerpt(quoted))
    return _excerpt(message, 2 * EXCERPT)


def _excerpt(text: str, limit: int = EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _near(text: str, index: int) -> str:
    """An excerpt of `text` around `index`, on one line, in backquotes."""
    start = max(0, index - EXCERPT // 4)
    return f"`{_excerpt(text[start:start + EXCERPT - 10], EXCERPT - 10)}`"
