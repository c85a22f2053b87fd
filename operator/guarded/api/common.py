"""Shared building blocks of the API models: naming, durations, conditions."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "rollouts.guarded.dev"
VERSION = "v1alpha1"

DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
DURATION_MAX_LENGTH = 32
# A component this large is beyond every duration bound in the API (>= 1000h, 100000m, 10^6 s or 10^9 ms).
# The schema's CEL rules refuse it before calling duration(), so that no value of at most
# DURATION_MAX_LENGTH characters can overflow Go's time.Duration there (what remains is < 10^17 ns).
DURATION_TOO_LARGE = (r"(^|[hms])0*([1-9][0-9]{3,}([.][0-9]+)?h|[1-9][0-9]{5,}([.][0-9]+)?m([0-9]|$)"
                      r"|[1-9][0-9]{6,}([.][0-9]+)?s|[1-9][0-9]{9,}([.][0-9]+)?ms)")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DnsName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration ("1m30s"). The schema has already checked the syntax."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def duration_rule(low: str, high: str) -> str:
    """A CEL rule (Kubernetes) for a string with DURATION_PATTERN: low <= duration <= high.

    A value the pattern refuses passes this rule (the pattern's own error names it), so that
    duration() only ever sees well-formed values; too large ones are refused before it is called."""
    return (f"!self.matches('{DURATION_PATTERN}') || (!self.matches('{DURATION_TOO_LARGE}')"
            f" && duration(self) >= duration('{low}') && duration(self) <= duration('{high}'))")


def bounded_duration(field: str, low: str, high: str, description: str) -> Any:
    """A Duration from `low` to `high` inclusive, checked by the model and by the CRD (CEL).

    `field` names it in the CRD's message (the API server also prefixes the path of the value);
    the model's message gets its path from errors.describe."""
    lo, hi = parse_duration(low), parse_duration(high)
    if not 0 < lo < hi or re.search(DURATION_TOO_LARGE, high):
        raise ValueError(f"bad bounds {low}..{high}")

    def within(text: str) -> str:
        if not lo <= parse_duration(text) <= hi:
            raise ValueError(f"must be a duration from {low} to {high}, not {text}")
        return text

    rule = {"rule": duration_rule(low, high), "message": f"{field} must be a duration from {low} to {high}"}
    return Annotated[str, Field(pattern=DURATION_PATTERN, max_length=DURATION_MAX_LENGTH,
                                description=f"{description} From {low} to {high}.",
                                json_schema_extra={"x-kubernetes-validations": [rule]}),
                     AfterValidator(within)]


class ApiModel(BaseModel):
    """Kubernetes-style model: camelCase on the wire, frozen in memory, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid",
        use_enum_values=False,
    )

    def to_wire(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(ApiModel):
    """A condition as in KEP-1623."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None
