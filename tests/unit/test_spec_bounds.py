"""Every duration and number in a spec has bounds, in the models and in the CRD, with the field named.

`spec.analysis.interval: "0s"` was once accepted and then divided by on every reconcile. Now each
such field refuses zero, negative and absurdly large values twice: the pydantic models (the operator
reports their error, via errors.describe, as Valid=False/InvalidSpec and never acts on the spec) and
the generated CRD (minimum/maximum, and a CEL rule per duration), so the API server refuses it first.
The tables below must list every such field: a test walks the CRD and fails on one that is missing.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from guarded.api import errors
from guarded.api.common import DURATION_MAX_LENGTH, DURATION_PATTERN, DURATION_TOO_LARGE, parse_duration
from guarded.api.policy import RolloutPolicySpec
from guarded.api.rollout import GuardedRolloutSpec
from testbed import ROOT

CRDS = ROOT / "crds"
# 2562048h and up overflow Go's time.Duration; the others are merely absurd.
HUGE_DURATIONS = ["99999999999h", "9999999999h", "2562048h", "1000000h", "999999999999ms", "8760h"]
HUGE_INTEGERS = [10**9 + 1, 2**63, 10**30]
HUGE_FLOATS = [1e9, 1e308]
INF = float("inf")


def rollout(**overrides: Any) -> dict:
    base: dict = {"target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2"}]}}
    base.update(overrides)
    return base


def metric(**fields: Any) -> dict:
    return {"name": "errors", "direction": "LowerIsBetter", "events": "e", "requests": "r", **fields}


# (wire path in the CRD, path errors.describe names, a spec with the value at that field, low, high)
DURATIONS: list[tuple[str, str, Any, str, str]] = [
    ("waves[].bake", "spec.waves[0].bake", lambda v: rollout(waves=[{"weight": 10, "bake": v}]), "1s", "168h"),
    ("progressDeadline", "spec.progressDeadline", lambda v: rollout(progressDeadline=v), "10s", "24h"),
    ("analysis.interval", "spec.analysis.interval", lambda v: rollout(analysis={"interval": v}), "1s", "1h"),
    ("analysis.preRolloutWindow", "spec.analysis.preRolloutWindow",
     lambda v: rollout(analysis={"preRolloutWindow": v}), "10s", "168h"),
    ("analysis.latency.threshold", "spec.analysis.latency.threshold",
     lambda v: rollout(analysis={"latency": {"histogram": "h", "threshold": v}}), "1ms", "1h"),
]

# (wire path, described path, spec builder, allowed interval: [ ] inclusive, ( ) exclusive, absurd values)
NUMBERS: list[tuple[str, str, Any, str, list[float]]] = [
    ("waves[].weight", "spec.waves[0].weight", lambda v: rollout(waves=[{"weight": v}]), "[1, 100]", HUGE_INTEGERS),
    ("waves[].replicas", "spec.waves[0].replicas", lambda v: rollout(waves=[{"replicas": v}]), "[1, 10000]",
     HUGE_INTEGERS),
    ("analysis.falseRollbackRate", "spec.analysis.falseRollbackRate",
     lambda v: rollout(analysis={"falseRollbackRate": v}), "(0, 0.5)", [*HUGE_FLOATS, INF]),
    ("analysis.maxInconclusive", "spec.analysis.maxInconclusive",
     lambda v: rollout(analysis={"maxInconclusive": v}), "[1, 10000]", HUGE_INTEGERS),
    ("analysis.metrics[].stableTolerance", "spec.analysis.metrics[0].stableTolerance",
     lambda v: rollout(analysis={"metrics": [metric(stableTolerance=v)]}), "(0, 10]", [*HUGE_FLOATS, INF]),
    ("analysis.metrics[].preRolloutTolerance", "spec.analysis.metrics[0].preRolloutTolerance",
     lambda v: rollout(analysis={"metrics": [metric(preRolloutTolerance=v)]}), "(0, 10]", [*HUGE_FLOATS, INF]),
    ("analysis.metrics[].minRatio", "spec.analysis.metrics[0].minRatio",
     lambda v: rollout(analysis={"metrics": [metric(direction="HigherIsBetter", minRatio=v)]}), "(0, 1]",
     [*HUGE_FLOATS, INF]),
    ("analysis.metrics[].maxRatio", "spec.analysis.metrics[0].maxRatio",
     lambda v: rollout(analysis={"metrics": [metric(maxRatio=v)]}), "(0, 1]", [*HUGE_FLOATS, INF]),
    ("analysis.metrics[].minRequests", "spec.analysis.metrics[0].minRequests",
     lambda v: rollout(analysis={"metrics": [metric(minRequests=v)]}), "[1, 1000000000]", HUGE_INTEGERS),
    ("analysis.detect[].degradation", "spec.analysis.detect[0].degradation",
     lambda v: rollout(analysis={"requests": "r", "detect": [{"metric": "errors", "degradation": v}]}), "(0, 10]",
     [*HUGE_FLOATS, INF]),
    ("analysis.detect[].power", "spec.analysis.detect[0].power",
     lambda v: rollout(analysis={"requests": "r", "detect": [{"metric": "errors", "degradation": 1, "power": v}]}),
     "(0.5, 0.999]", [*HUGE_FLOATS, INF]),
    ("trafficRouting.httpRoute.ruleIndex", "spec.trafficRouting.httpRoute.ruleIndex",
     lambda v: rollout(trafficRouting={"httpRoute": {"name": "shop", "ruleIndex": v}}), "[0, 63]", HUGE_INTEGERS),
]

# RolloutPolicy: the same for its spec (rules, and a safety reset's rules). requiredApprovals may be 0.
def _policy_rules(at: str) -> Any:
    if not at:
        return lambda rules: {"rules": rules}
    return lambda rules: {"safetyReset": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z",
                                          "rules": rules}}  # a safety reset's rules: the same bounds


def _nested(path: str, value: Any) -> dict:
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


POLICY_DURATIONS: list[tuple[str, str, Any, str, str]] = [
    (f"{at}rules.{name}", f"spec.{at}rules.{name}", lambda v, at=at, name=name: _policy_rules(at)({name: v}), "1s",
     "168h")
    for at in ("", "safetyReset.")
    for name in ("minBake", "emergencyBake")
]
POLICY_NUMBERS: list[tuple[str, str, Any, str, list[float]]] = [
    (f"{at}rules.{name}", f"spec.{at}rules.{name}",
     lambda v, at=at, name=name: _policy_rules(at)(_nested(name, v)), bounds, HUGE_INTEGERS)
    for at in ("", "safetyReset.")
    for name, bounds in [
        ("requiredApprovals", "[0, 10]"),
        ("maxConcurrent", "[1, 1000]"),
        ("firstWave.maxReplicas", "[1, 10000]"),
        ("firstWave.maxWeight", "[1, 100]"),
        ("blastRadius.maxPods", "[1, 1000000]"),
        ("blastRadius.maxSharePercent", "[1, 100]"),
    ]
] + [
    (f"{at}rules.requiredDetection[].{name}", f"spec.{at}rules.requiredDetection[0].{name}",
     lambda v, at=at, name=name: _policy_rules(at)({"requiredDetection": [{"metric": "orders", "degradation": 0.5,
                                                                           name: v}]}),
     bounds, [*HUGE_FLOATS, INF])
    for at in ("", "safetyReset.")
    for name, bounds in [("degradation", "(0, 10]"), ("power", "(0.5, 0.999]")]
]


def interval(text: str) -> tuple[float, bool, float, bool]:
    """"(0, 1]" -> (0, exclusive, 1, inclusive)."""
    low, high = (float(x) for x in text[1:-1].split(","))
    return low, text[0] == "(", high, text[-1] == ")"


def refusal(model: type[BaseModel], spec: dict) -> str:
    with pytest.raises(ValidationError) as err:
        model.model_validate(spec)
    return errors.describe(err.value)


def cases(table: list, model: type[BaseModel], values: Any) -> list:
    return [pytest.param(model, row, value, id=f"{row[0]}={value}") for row in table for value in values(row)]


def duration_bad_values(row: tuple) -> list[str]:
    return ["0s", "0ms", "0h0m0s", "-1s", "-0s", "-5m", *HUGE_DURATIONS]


def number_bad_values(row: tuple) -> list[float]:
    low, low_open, _, _ = interval(row[3])
    return ([0, 0.0] if low > 0 or low_open else []) + [-1, -(10**9), -INF] + row[4]


# -- the models -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model, row, value",
                         cases(DURATIONS, GuardedRolloutSpec, duration_bad_values)
                         + cases(POLICY_DURATIONS, RolloutPolicySpec, duration_bad_values))
def test_zero_negative_and_absurd_durations_are_refused_with_the_field_named(
        model: type[BaseModel], row: tuple, value: str) -> None:
    _, path, build, low, high = row
    text = refusal(model, build(value))
    assert text.startswith(f"{path}: "), text
    if not value.startswith("-"):  # negative ones fail the pattern; the others name the bounds
        assert text == f"{path}: must be a duration from {low} to {high}, not {value}"


@pytest.mark.parametrize("model, row, value",
                         cases(NUMBERS, GuardedRolloutSpec, number_bad_values)
                         + cases(POLICY_NUMBERS, RolloutPolicySpec, number_bad_values))
def test_zero_negative_and_absurd_numbers_are_refused_with_the_field_named(
        model: type[BaseModel], row: tuple, value: float) -> None:
    path = row[1]
    text = refusal(model, row[2](value))
    assert text.startswith(f"{path}: "), text
    assert re.search(r"(greater|less) than|finite number", text), text


@pytest.mark.parametrize("model, row", [pytest.param(GuardedRolloutSpec, r, id=r[0]) for r in DURATIONS]
                         + [pytest.param(RolloutPolicySpec, r, id=r[0]) for r in POLICY_DURATIONS])
def test_duration_bounds_are_inclusive(model: type[BaseModel], row: tuple) -> None:
    _, path, build, low, high = row
    model.model_validate(build(low))
    model.model_validate(build(high))
    for outside in (f"{int(parse_duration(low) * 1000) - 1}ms", f"{int(parse_duration(high) * 1000) + 1}ms"):
        assert refusal(model, build(outside)).startswith(f"{path}: must be a duration from {low} to {high}")


@pytest.mark.parametrize("model, row", [pytest.param(GuardedRolloutSpec, r, id=r[0]) for r in NUMBERS]
                         + [pytest.param(RolloutPolicySpec, r, id=r[0]) for r in POLICY_NUMBERS])
def test_number_bounds_are_exactly_the_documented_interval(model: type[BaseModel], row: tuple) -> None:
    _, path, build, bounds, _ = row
    low, low_open, high, high_open = interval(bounds)
    crd = "guardedrollouts.yaml" if model is GuardedRolloutSpec else "rolloutpolicies.yaml"
    whole = leaves(spec_schema(crd))[row[0]]["type"] == "integer"
    step = 1 if whole else 1e-6
    cast = int if whole else float
    for value, allowed in [(low, not low_open), (low - step, False), (low + step, True),
                           (high, not high_open), (high + step, False), (high - step, True)]:
        if allowed:
            model.model_validate(build(cast(value)))
        else:
            assert refusal(model, build(cast(value))).startswith(f"{path}: "), value


def test_the_operator_reports_the_issue_case_by_field() -> None:
    """The issue: interval 0s started a rollout that then crashed with ZeroDivisionError."""
    text = refusal(GuardedRolloutSpec, rollout(analysis={"interval": "0s", "requests": "http_requests_total"},
                                               waves=[{"replicas": 1, "bake": "0s"}], progressDeadline="9999999999h"))
    assert text.split("; ") == [
        "spec.waves[0].bake: must be a duration from 1s to 168h, not 0s",
        "spec.progressDeadline: must be a duration from 10s to 24h, not 9999999999h",
        "spec.analysis.interval: must be a duration from 1s to 1h, not 0s",
    ]


def test_the_defaults_are_within_the_bounds() -> None:
    spec = GuardedRolloutSpec.model_validate(rollout(analysis={"metrics": [metric()]}))
    assert spec.analysis is not None and spec.progress_deadline == "10m"


def test_a_higher_is_better_tolerance_stays_below_one() -> None:
    text = refusal(GuardedRolloutSpec, rollout(analysis={"metrics": [
        metric(direction="HigherIsBetter", stableTolerance=1)]}))
    assert text.startswith("spec.analysis.metrics[0]: stableTolerance must be below 1"), text


# -- the CRDs -------------------------------------------------------------------------------------

def spec_schema(name: str) -> dict:
    crd = yaml.safe_load((CRDS / name).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def leaves(node: dict, path: str = "") -> dict[str, dict]:
    """Wire path (lists as []) -> schema of every number, integer and duration in a schema."""
    found: dict[str, dict] = {}
    if node.get("type") in ("integer", "number") or node.get("pattern") == DURATION_PATTERN:
        found[path] = node
    for key, sub in node.get("properties", {}).items():
        found.update(leaves(sub, f"{path}.{key}" if path else key))
    if "items" in node:
        found.update(leaves(node["items"], f"{path}[]"))
    return found


@pytest.mark.parametrize("crd, durations, numbers", [
    ("guardedrollouts.yaml", DURATIONS, NUMBERS),
    ("rolloutpolicies.yaml", POLICY_DURATIONS, POLICY_NUMBERS),
])
def test_the_tables_list_every_duration_and_number_of_the_spec(crd: str, durations: list, numbers: list) -> None:
    found = leaves(spec_schema(crd))
    assert sorted(found) == sorted(row[0] for row in durations + numbers)


@pytest.mark.parametrize("crd, row", [pytest.param("guardedrollouts.yaml", r, id=r[0]) for r in NUMBERS]
                         + [pytest.param("rolloutpolicies.yaml", r, id=r[0]) for r in POLICY_NUMBERS])
def test_the_crd_bounds_every_number_as_the_model_does(crd: str, row: tuple) -> None:
    node = leaves(spec_schema(crd))[row[0]]
    low, low_open, high, high_open = interval(row[3])
    assert (node["minimum"], node.get("exclusiveMinimum", False)) == (low, low_open), node
    assert (node["maximum"], node.get("exclusiveMaximum", False)) == (high, high_open), node


def api_server_accepts_integer(node: dict, value: int) -> bool:
    """The API server's OpenAPI check of an integer-valued JSON number (`0`, also what kubectl sends for
    `0.0`) against a number schema: it truncates the bounds to integers first (go-openapi's
    MinimumNativeType), so `minimum: 0.01` lets 0 through. Observed on the test bed (v1.34)."""
    low, high = int(node["minimum"]), int(node["maximum"])
    above = value > low if node.get("exclusiveMinimum") else value >= low
    below = value < high if node.get("exclusiveMaximum") else value <= high
    return above and below


@pytest.mark.parametrize("crd, row", [pytest.param("guardedrollouts.yaml", r, id=r[0]) for r in NUMBERS])
def test_the_crd_refuses_whole_numbers_as_the_model_does(crd: str, row: tuple) -> None:
    node = leaves(spec_schema(crd))[row[0]]
    low, low_open, high, high_open = interval(row[3])
    for value in range(-2, int(min(high, 100)) + 3):
        model = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        assert api_server_accepts_integer(node, value) is model, f"{row[0]} = {value}"


@pytest.mark.parametrize("crd, row", [pytest.param("guardedrollouts.yaml", r, id=r[0]) for r in DURATIONS]
                         + [pytest.param("rolloutpolicies.yaml", r, id=r[0]) for r in POLICY_DURATIONS])
def test_the_crd_bounds_every_duration_with_cel(crd: str, row: tuple) -> None:
    wire, _, _, low, high = row
    node = leaves(spec_schema(crd))[wire]
    assert node["type"] == "string" and node["maxLength"] == DURATION_MAX_LENGTH == 32
    [rule] = node["x-kubernetes-validations"]
    assert f"duration(self) >= duration('{low}') && duration(self) <= duration('{high}')" in rule["rule"]
    assert f"!self.matches('{DURATION_TOO_LARGE}') &&" in rule["rule"], "duration() must never see an overflow"
    named = wire if crd == "guardedrollouts.yaml" else wire.rsplit(".", 1)[-1]
    assert named in rule["message"] and f"from {low} to {high}" in rule["message"], rule["message"]


def test_status_carries_no_cel_rules() -> None:
    crd = yaml.safe_load((CRDS / "guardedrollouts.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "x-kubernetes-validations" not in yaml.safe_dump(status)


# -- the CEL rule's guard, in Python: same regexes (RE2 and Python agree on these) ------------------

_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def go_nanoseconds(text: str) -> Fraction:
    """What Go's time.ParseDuration adds up (before truncation), to see whether it would overflow."""
    return sum((Fraction(n) * _UNIT_NS[u] for n, u in re.findall(r"([0-9]+(?:[.][0-9]+)?)(ms|s|m|h)", text)),
               Fraction(0))


component = st.builds(lambda zeros, n, frac, unit: "0" * zeros + str(n) + (f".{frac}" if frac else "") + unit,
                      st.integers(0, 3), st.one_of(st.integers(0, 9999), st.integers(0, 10**12)),
                      st.one_of(st.none(), st.integers(0, 10**6).map(str)), st.sampled_from(["ms", "s", "m", "h"]))
LARGEST_BOUND = max(parse_duration(row[4]) for row in DURATIONS + POLICY_DURATIONS)


def fit(parts: list[str]) -> str:
    """The leading components that fit in DURATION_MAX_LENGTH (the first always does)."""
    text = ""
    for part in parts:
        if len(text + part) > DURATION_MAX_LENGTH:
            break
        text += part
    return text


@given(st.lists(component, min_size=1, max_size=16).map(fit))
@example("999h" * 8)
@example("99999m" * 5 + "9h")
@example("999.99999999999999999h" + "999h999h")
def test_cels_guard_refuses_only_values_above_every_bound_and_lets_none_overflow(text: str) -> None:
    assert re.fullmatch(DURATION_PATTERN, text) and len(text) <= DURATION_MAX_LENGTH
    if re.search(DURATION_TOO_LARGE, text):
        assert parse_duration(text) > LARGEST_BOUND, "the guard refused a value some bound allows"
    else:
        assert go_nanoseconds(text) < 2**63 // 16, "duration() could overflow"


@pytest.mark.parametrize("text, too_large", [
    ("999h", False), ("1000h", True), ("0001000h", True), ("99999m", False), ("100000m", True),
    ("100000ms", False), ("999999s", False), ("1000000s", True), ("999999999ms", False), ("1000000000ms", True),
    ("1h1000000s", True), ("1.99999999h", False), ("5m100000ms", False), ("9999999999h", True),
])
def test_cels_guard_by_example(text: str, too_large: bool) -> None:
    assert bool(re.search(DURATION_TOO_LARGE, text)) is too_large


def test_the_docs_table_has_every_field() -> None:
    text = (ROOT / "docs" / "waves.md").read_text()
    for wire, _, _, low, high in DURATIONS:
        assert f"| `{wire}` | {low} to {high}" in text, wire
    for row in NUMBERS:
        assert re.search(rf"[`.]{row[0].split('.')[-1]}`", text), row[0]
