"""The gates of a shared configuration change (spec.consumers): every consumer counts in the blast radius,
every policy that selects any consumer governs the change, each consumer must exist and read what changes."""

from __future__ import annotations

from specs import spec
from test_gates import guard, named, observe

from guarded.core import gates

CHANGE = {"configMaps": [{"name": "shop-config", "data": {"a": "b"}}]}
READS = frozenset({("ConfigMap", "shop-config")})


def shared(*consumers: str):
    return spec(change=CHANGE, consumers=[{"name": c} for c in consumers])


def test_every_consumer_counts_in_the_blast_radius_and_a_line_crossed_by_all_needs_seniors() -> None:
    line = named("line", rules={"blastRadius": {"maxPods": 20}, "seniorGroups": ["seniors"]})
    consumers = {"checkout": (8, READS, {}), "search": (6, READS, {})}
    outcome = gates.evaluate(shared("checkout", "search"), observe(guard=guard(line, consumers=consumers)))
    assert outcome.blast_radius is not None and outcome.blast_radius.pods == 24 and outcome.blast_radius.high
    alone = gates.evaluate(spec(change=CHANGE), observe(guard=guard(line)))
    assert alone.blast_radius is not None and alone.blast_radius.pods == 10 and not alone.blast_radius.high


def test_a_policy_that_selects_only_a_consumer_governs_the_whole_change() -> None:
    payments = named("payments", rules={"requiredApprovals": 1},
                     selector={"targetSelector": {"matchLabels": {"team": "payments"}}})
    consumers = {"checkout": (4, READS, {"team": "payments"})}
    outcome = gates.evaluate(shared("checkout"), observe(guard=guard(payments, consumers=consumers)))
    assert not outcome.approved.ok and "0/1 approvals" in outcome.approved.message
    assert outcome.policy is not None and outcome.policy.policies == ["payments"]
    free = gates.evaluate(shared("checkout"), observe(guard=guard(payments, consumers={
        "checkout": (4, READS, {"team": "search"})})))
    assert free.approved.ok


def test_a_missing_consumer_or_one_that_does_not_read_the_change_fails_validation_naming_it() -> None:
    consumers = {"checkout": None, "search": (4, frozenset({("ConfigMap", "other")}), {}),
                 "cart": (4, frozenset({("ConfigMap", "shop-config-0123456789")}), {})}
    outcome = gates.evaluate(shared("checkout", "search", "cart"), observe(guard=guard(consumers=consumers)))
    assert not outcome.validated.ok
    assert [(f.rule, f.field) for f in outcome.findings] == [
        ("ConsumerNotFound", "spec.consumers[0].name"), ("ConsumerDoesNotRead", "spec.consumers[1].name")]
    assert "does not read ConfigMap shop-config" in outcome.findings[1].message
