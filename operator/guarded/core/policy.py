"""Which RolloutPolicies govern a rollout, and the strictest value of each rule among them. Pure.

Several policies may select one rollout (a company-wide one, a tier-1 one, a team's own). Each rule
combines to its strictest value: the most approvals, the longest minimum bake, the smallest first
wave, every documentation field and metric any of them asks for, every senior-group requirement.
While a policy's safety reset is active its rules join the combination as if they were a policy of
their own ("tier-1/safetyReset"), so a reset can only tighten. Every combined value remembers which
policies set it, for the status and the audit report.

Concurrency is not combined: each policy counts the rollouts it governs against its own limit.

Config validation rules (spec.configValidation) are not combined either: every rule of every matching
policy applies (one rule two policies set alike is one rule set by both). They are part of the policy's
spec, not of its rules, so a safety reset does not add any.

An emergency release (spec.emergency, `for_emergency`) keeps every rule but two: each wave bakes at most
the longest emergencyBake of the policies (DEFAULT_EMERGENCY_BAKE when none sets one) instead of at least
minBake, and at least one approval is required even where no policy asks for one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from guarded.api.common import parse_duration
from guarded.api.policy import (
    BUILTIN_METRICS,
    ConfigValidation,
    LabelSelector,
    PolicyRules,
    PolicySelector,
    RolloutPolicySpec,
    TimeWindow,
)
from guarded.api.rollout import PolicyStatus, RuleSource
from guarded.core.clock import parse

DEFAULT_EMERGENCY_BAKE = "30s"  # an emergency release's longest bake when no policy sets emergencyBake
EMERGENCY_SOURCE = "spec.emergency"  # who sets a rule an emergency release adds (in setBy)
DEFAULT_SOURCE = "default"


@dataclass(frozen=True, kw_only=True)
class NamedPolicy:
    name: str
    spec: RolloutPolicySpec


@dataclass(frozen=True, kw_only=True)
class UnreadablePolicy:
    """A policy this operator's model refuses (say, a newer schema). Its selector, when readable, says whom
    it may govern; without one it may govern anyone."""

    name: str
    selector: PolicySelector | None
    error: str


def unreadable_matching(policies: Iterable[UnreadablePolicy], *, namespace_labels: Mapping[str, str],
                        target_labels: Mapping[str, str]) -> list[UnreadablePolicy]:
    return sorted(
        (p for p in policies if p.selector is None
         or (selects(p.selector.namespace_selector, namespace_labels)
             and selects(p.selector.target_selector, target_labels))),
        key=lambda p: p.name,
    )


@dataclass(frozen=True, kw_only=True)
class Rule:
    value: int | float
    set_by: tuple[str, ...]
    text: str = ""

    def __str__(self) -> str:
        return self.text or str(self.value)


@dataclass(frozen=True, kw_only=True)
class SeniorRequirement:
    groups: tuple[str, ...]
    set_by: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ActiveFreeze:
    policy: str
    window: TimeWindow


@dataclass(frozen=True, kw_only=True)
class EffectiveRules:
    policies: tuple[str, ...] = ()
    safety_resets: tuple[str, ...] = ()
    required_approvals: Rule | None = None
    senior: tuple[SeniorRequirement, ...] = ()
    documentation: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    metrics: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    detection: Mapping[str, Rule] = field(default_factory=dict)   # metric -> the smallest required degradation
    detection_power: Mapping[str, Rule] = field(default_factory=dict)   # metric -> the highest required power
    first_wave_replicas: Rule | None = None
    first_wave_weight: Rule | None = None
    min_bake: Rule | None = None
    emergency_bake: Rule | None = None
    blast_pods: Rule | None = None
    blast_share: Rule | None = None
    concurrency: Mapping[str, Rule] = field(default_factory=dict)  # policy name -> its own limit
    freezes: tuple[ActiveFreeze, ...] = ()
    config_validation: Mapping[ConfigValidation, tuple[str, ...]] = field(default_factory=dict)  # rule -> setBy


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector selects everything."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
        if req.operator == "In" and (not present or labels[req.key] not in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
    return True


def matching(policies: Iterable[NamedPolicy], *, namespace_labels: Mapping[str, str],
             target_labels: Mapping[str, str]) -> list[NamedPolicy]:
    return sorted(
        (p for p in policies
         if selects(p.spec.selector.namespace_selector, namespace_labels)
         and selects(p.spec.selector.target_selector, target_labels)),
        key=lambda p: p.name,
    )


def in_window(window: TimeWindow, now: datetime) -> bool:
    return parse(window.start) <= now < parse(window.end)


def _stricter(current: Rule | None, value: int | float | None, source: str, *, larger: bool,
              text: str = "") -> Rule | None:
    if value is None:
        return current
    if current is None or (value > current.value if larger else value < current.value):
        return Rule(value=value, set_by=(source,), text=text)
    if value == current.value:
        return Rule(value=value, set_by=(*current.set_by, source), text=current.text)
    return current


def _rule_sets(policy: NamedPolicy, now: datetime) -> list[tuple[str, PolicyRules]]:
    sets = [(policy.name, policy.spec.rules)]
    reset = policy.spec.safety_reset
    if reset is not None and in_window(reset, now):
        sets.append((f"{policy.name}/safetyReset", reset.rules))
    return sets


def config_rule_text(rule: ConfigValidation) -> str:
    """How the status names a config validation rule: "shop-config/settings.json json schema ns/name#key"
    ("*" for every ConfigMap; "optional" when the key may be absent)."""
    text = f"{rule.config_map or '*'}/{rule.key} {rule.format}"
    if rule.schema_from is not None:
        text += f" schema {rule.schema_from.ref}"
    return text if rule.required else f"{text} optional"


def _config_validation(policies: Iterable[NamedPolicy]) -> dict[ConfigValidation, tuple[str, ...]]:
    """The union of the policies' config validation rules, in the order of their status text."""
    union: dict[ConfigValidation, tuple[str, ...]] = {}
    for policy in policies:
        for rule in policy.spec.config_validation:
            by = union.get(rule, ())
            if policy.name not in by:
                union[rule] = (*by, policy.name)
    return {rule: union[rule] for rule in sorted(union, key=config_rule_text)}


def config_validations(rules: EffectiveRules) -> list[tuple[str, ConfigValidation]]:
    """The config validation rules in force, each with who set it ("a,b" when two policies did), for
    core.config_checks.check."""
    return [(",".join(by), rule) for rule, by in rules.config_validation.items()]


def combine(policies: Iterable[NamedPolicy], now: datetime) -> EffectiveRules:
    policies = list(policies)
    approvals = first_replicas = first_weight = min_bake = emergency_bake = blast_pods = blast_share = None
    senior: dict[tuple[str, ...], tuple[str, ...]] = {}
    documentation: dict[str, tuple[str, ...]] = {}
    metrics: dict[str, tuple[str, ...]] = {}
    concurrency: dict[str, Rule] = {}
    detection: dict[str, Rule | None] = {}
    detection_power: dict[str, Rule | None] = {}
    resets: list[str] = []
    for policy in policies:
        for source, rules in _rule_sets(policy, now):
            if source != policy.name:
                resets.append(policy.name)
            approvals = _stricter(approvals, rules.required_approvals, source, larger=True)
            if rules.senior_groups:
                key = tuple(sorted(set(rules.senior_groups)))
                senior[key] = (*senior.get(key, ()), source)
            for doc in rules.required_documentation:
                documentation[doc] = (*documentation.get(doc, ()), source)
            for metric in rules.required_metrics:
                metrics[metric] = (*metrics.get(metric, ()), source)
            for req in rules.required_detection:
                guard = guard_name(req.metric)   # 'orders' and 'order-rate' are one rule, merged
                detection[guard] = _stricter(detection.get(guard), req.degradation, source, larger=False)
                detection_power[guard] = _stricter(detection_power.get(guard), req.power, source,
                                                        larger=True)
            if rules.first_wave is not None:
                first_replicas = _stricter(first_replicas, rules.first_wave.max_replicas, source, larger=False)
                first_weight = _stricter(first_weight, rules.first_wave.max_weight, source, larger=False)
            if rules.min_bake is not None:
                min_bake = _stricter(min_bake, parse_duration(rules.min_bake), source, larger=True,
                                     text=rules.min_bake)
            if rules.emergency_bake is not None:  # the longest is the strictest: an emergency bakes at most this
                emergency_bake = _stricter(emergency_bake, parse_duration(rules.emergency_bake), source, larger=True,
                                           text=rules.emergency_bake)
            if rules.blast_radius is not None:
                blast_pods = _stricter(blast_pods, rules.blast_radius.max_pods, source, larger=False)
                blast_share = _stricter(blast_share, rules.blast_radius.max_share_percent, source, larger=False)
            if rules.max_concurrent is not None:
                limit = _stricter(concurrency.get(policy.name), rules.max_concurrent, source, larger=False)
                assert limit is not None
                concurrency[policy.name] = limit
    freezes = tuple(ActiveFreeze(policy=p.name, window=w) for p in policies
                    for w in p.spec.freeze_windows if in_window(w, now))
    return EffectiveRules(
        policies=tuple(p.name for p in policies), safety_resets=tuple(resets),
        required_approvals=approvals,
        senior=tuple(SeniorRequirement(groups=g, set_by=s) for g, s in sorted(senior.items())),
        documentation=documentation, metrics=metrics,
        detection={k: v for k, v in detection.items() if v is not None},
        detection_power={k: v for k, v in detection_power.items() if v is not None},
        first_wave_replicas=first_replicas,
        first_wave_weight=first_weight, min_bake=min_bake, emergency_bake=emergency_bake, blast_pods=blast_pods,
        blast_share=blast_share, concurrency=concurrency, freezes=freezes,
        config_validation=_config_validation(policies),
    )


def guard_name(metric: str) -> str:
    """A metric by its guard's name: a shortcut's alias (orders) becomes its guard (order-rate)."""
    return BUILTIN_METRICS.get(metric, metric)


def missing_detection(rules: EffectiveRules, detect: Iterable[tuple[str, float, float]]) -> list[str]:
    """What spec.analysis.detect (metric, degradation, power) lacks of the policies' requiredDetection: a
    degradation at most the rule's and a power at least its, for the metric by its name or its alias."""
    out = []
    for metric, rule in sorted(rules.detection.items()):
        power = rules.detection_power.get(metric)
        want_power = float(power.value) if power is not None else 0.0
        if not any(guard_name(m) == metric and d <= rule.value and p >= want_power for m, d, p in detect):
            out.append(f"spec.analysis.detect must make a {rule.value:g} degradation of {metric!r} detectable with "
                       f"power {want_power:g}, required by {', '.join(rule.set_by)}")
    return out


def for_emergency(rules: EffectiveRules) -> EffectiveRules:
    """The rules of an emergency release: an emergencyBake in force (the default when no policy sets one)
    and at least one approval, whatever the policies require (their higher counts still apply)."""
    bake = rules.emergency_bake or Rule(value=parse_duration(DEFAULT_EMERGENCY_BAKE), set_by=(DEFAULT_SOURCE,),
                                        text=DEFAULT_EMERGENCY_BAKE)
    approvals = rules.required_approvals
    if approvals is None or approvals.value < 1:
        approvals = Rule(value=1, set_by=(EMERGENCY_SOURCE,))
    return replace(rules, emergency_bake=bake, required_approvals=approvals)


def describe(rules: EffectiveRules) -> PolicyStatus | None:
    """What the status shows: the policies in force and who set each rule (also the rules an emergency
    release adds where no policy applies)."""
    if not rules.policies and rules.required_approvals is None and rules.emergency_bake is None:
        return None
    out: list[RuleSource] = []

    def add(name: str, rule: Rule | None) -> None:
        if rule is not None:
            out.append(RuleSource(rule=name, value=str(rule), set_by=list(rule.set_by)))

    add("requiredApprovals", rules.required_approvals)
    for req in rules.senior:
        out.append(RuleSource(rule="seniorGroups", value=",".join(req.groups), set_by=list(req.set_by)))
    for doc, by in sorted(rules.documentation.items()):
        out.append(RuleSource(rule="requiredDocumentation", value=doc, set_by=list(by)))
    for metric, by in sorted(rules.metrics.items()):
        out.append(RuleSource(rule="requiredMetrics", value=metric, set_by=list(by)))
    for metric, rule in sorted(rules.detection.items()):
        power = rules.detection_power.get(metric)
        out.append(RuleSource(rule="requiredDetection", value=f"{metric} {rule.value:g} power {power}",
                              set_by=list(rule.set_by)))
    add("firstWave.maxReplicas", rules.first_wave_replicas)
    add("firstWave.maxWeight", rules.first_wave_weight)
    add("minBake", rules.min_bake)
    add("emergencyBake", rules.emergency_bake)
    add("blastRadius.maxPods", rules.blast_pods)
    add("blastRadius.maxSharePercent", rules.blast_share)
    for policy, rule in sorted(rules.concurrency.items()):
        out.append(RuleSource(rule=f"maxConcurrent[{policy}]", value=str(rule), set_by=list(rule.set_by)))
    for freeze in rules.freezes:
        out.append(RuleSource(rule="freeze", value=f"{freeze.window.start}..{freeze.window.end}",
                              set_by=[freeze.policy]))
    for check, by in rules.config_validation.items():
        out.append(RuleSource(rule="configValidation", value=config_rule_text(check), set_by=list(by)))
    return PolicyStatus(policies=list(rules.policies), safety_resets=sorted(set(rules.safety_resets)), rules=out)
