"""The pre-flight gates as tables: policies combined, approvals judged, templates checked, queues ordered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from specs import analysis, spec, wave
from world import T0, pod_template

from guarded.api.policy import RolloutPolicySpec
from guarded.core import gates, policy
from guarded.core.clock import stamp
from guarded.core.observations import ApprovalObs, DeploymentState, GuardObservation, Observations, QueueEntry
from guarded.core.validation import check_template, image_tag


def named(name: str, **body: object) -> policy.NamedPolicy:
    return policy.NamedPolicy(name=name, spec=RolloutPolicySpec.model_validate(body))


def observe(*, guard: GuardObservation, replicas: int = 10, generation: int = 1, labels: dict | None = None,
            minutes: float = 0) -> Observations:
    target = DeploymentState(name="shop", replicas=replicas, template=pod_template(),
                             labels=labels if labels is not None else {"tier": "1"})
    return Observations(now=T0 + timedelta(minutes=minutes), namespace="shop", name="release", uid="uid-1",
                        generation=generation, target=target, canary=None, guard=guard)


def guard(*policies: policy.NamedPolicy, approvals: tuple[ApprovalObs, ...] = (), authors: tuple[str, ...] | None =
          ("alice",), **extra: object) -> GuardObservation:
    return GuardObservation(created=stamp(T0), policies=policies, approvals=approvals, authors=authors,
                            dry_run_done=True, **extra)  # type: ignore[arg-type]


def approval(who: str, *groups: str, revision: int = 1, uid: str = "uid-1") -> ApprovalObs:
    return ApprovalObs(name=f"release-{who}", approver=who, groups=("engineers", *groups), revision=revision,
                       rollout_uid=uid)


TIER1 = named("tier-1", rules={"requiredApprovals": 2, "seniorGroups": ["senior-engineers"]},
              selector={"targetSelector": {"matchLabels": {"tier": "1"}}})


@pytest.mark.parametrize(("approvals", "ai", "approved", "says"), [
    ((), False, False, "0/2 approvals"),
    ((approval("alice"), approval("bob")), False, False, "1/2 approvals"),           # the author's own
    ((approval("bob"), approval("bob")), False, False, "1/2 approvals"),             # one person, twice
    ((approval("bob"), approval("dave", revision=0)), False, False, "1/2"),          # stale revision
    ((approval("bob"), approval("dave", uid="old")), False, False, "1/2"),           # an earlier rollout
    ((approval("bob"), approval("dave")), False, True, "approved by bob, dave"),
    ((approval("bob"), approval("dave")), True, False, "AI-assisted"),               # seniors needed
    ((approval("bob"), approval("carol", "senior-engineers")), True, True, "approved by bob, carol"),
])
def test_approvals_count_distinct_non_authors_of_this_revision(approvals: tuple, ai: bool, approved: bool,
                                                               says: str) -> None:
    outcome = gates.evaluate(spec(aiAssisted=ai), observe(guard=guard(TIER1, approvals=approvals)))
    assert outcome.approved.ok is approved
    assert says in outcome.approved.message
    assert outcome.clear is approved


def test_unknown_authors_count_no_approval_at_all() -> None:
    outcome = gates.evaluate(spec(), observe(guard=guard(TIER1, approvals=(approval("bob"), approval("dave")),
                                                         authors=None)))
    assert not outcome.approved.ok
    assert all("authors are unknown" in a.reason for a in outcome.approvals)


def test_a_policy_that_does_not_select_the_target_asks_nothing() -> None:
    outcome = gates.evaluate(spec(), observe(guard=guard(TIER1), labels={"tier": "3"}))
    assert outcome.clear and outcome.policy is None


def test_the_strictest_rule_wins_and_says_who_set_it() -> None:
    loose = named("company", rules={"requiredApprovals": 1, "minBake": "30s", "firstWave": {"maxWeight": 20},
                                    "requiredDocumentation": ["ticket"]})
    strict = named("tier-1", rules={"requiredApprovals": 2, "minBake": "10s", "firstWave": {"maxReplicas": 1},
                                    "requiredDocumentation": ["ticket", "rollbackPlan"]})
    rules = policy.combine([loose, strict], T0)
    assert (rules.required_approvals.value, rules.required_approvals.set_by) == (2, ("tier-1",))  # type: ignore
    assert (rules.min_bake.text, rules.min_bake.set_by) == ("30s", ("company",))  # type: ignore[union-attr]
    assert rules.documentation == {"ticket": ("company", "tier-1"), "rollbackPlan": ("tier-1",)}
    described = {(r.rule, r.value): r.set_by for r in policy.describe(rules).rules}  # type: ignore[union-attr]
    assert described[("firstWave.maxReplicas", "1")] == ["tier-1"]


def test_the_plan_lowers_the_first_wave_and_raises_bakes_to_the_policy() -> None:
    p = named("tier-1", rules={"firstWave": {"maxReplicas": 1}, "minBake": "1m"})
    s = spec(waves=[wave("20%", bake="10s"), wave("100%", bake="2m")])
    outcome = gates.evaluate(s, observe(guard=guard(p)))
    assert [(w.replicas, w.weight, w.bake) for w in outcome.plan] == [(1, None, "1m"), (None, 100, "2m")]
    assert outcome.plan_notes == ["wave 1 lowered from 2 to 1 canary pods by tier-1",
                                  "wave 1 bake raised from 10s to 1m by tier-1"]


def test_missing_documentation_and_metrics_block_with_the_fields_named() -> None:
    p = named("tier-1", rules={"requiredDocumentation": ["ticket"], "requiredMetrics": ["orders"]})
    outcome = gates.evaluate(spec(), observe(guard=guard(p)))
    assert not outcome.admitted.ok and outcome.admitted.reason == "DocumentationMissing"
    assert "spec.ticket is required by tier-1" in outcome.admitted.message
    assert "spec.analysis must guard 'orders'" in outcome.admitted.message
    documented = spec(ticket="OPS-1", analysis=analysis())
    assert gates.evaluate(documented, observe(guard=guard(p))).admitted.ok


def test_freeze_and_safety_reset_apply_only_inside_their_windows() -> None:
    p = named("tier-1", freezeWindows=[{"start": "2026-11-22T12:00:00Z", "end": "2026-11-22T12:10:00Z"}],
              safetyReset={"start": "2026-11-22T12:00:00Z", "end": "2026-11-22T13:00:00Z",
                           "rules": {"requiredApprovals": 1}})
    during = gates.evaluate(spec(), observe(guard=guard(p), minutes=5))
    assert during.admitted.reason == "Frozen" and not during.approved.ok
    reset_only = gates.evaluate(spec(), observe(guard=guard(p), minutes=30))
    assert reset_only.admitted.ok and not reset_only.approved.ok
    assert reset_only.policy.safety_resets == ["tier-1"]  # type: ignore[union-attr]
    after = gates.evaluate(spec(), observe(guard=guard(p), minutes=61))
    assert after.clear


def queued(name: str, second: int, *, active: bool = False, waiting: bool = False) -> QueueEntry:
    return QueueEntry(namespace="shop", name=name, created=stamp(T0 + timedelta(seconds=second)),
                      policies=("limit",), active=active, waiting=waiting)


@pytest.mark.parametrize(("queue", "admitted"), [
    ((queued("a", -9, active=True),), True),
    ((queued("a", -9, active=True), queued("b", -8, active=True)), False),
    ((queued("a", -9, active=True), queued("b", -5, waiting=True)), False),   # b is ahead in the queue
    ((queued("a", -9, active=True), queued("c", 5, waiting=True)), True),     # c is behind
    ((queued("release", 0, active=True), queued("a", -9, active=True)), True),  # its own entry is not counted
])
def test_a_concurrency_slot_goes_to_the_oldest_waiting_rollout(queue: tuple, admitted: bool) -> None:
    p = named("limit", rules={"maxConcurrent": 2})
    outcome = gates.evaluate(spec(), observe(guard=guard(p, queue=queue)))
    assert outcome.admitted.ok is admitted
    assert any(g.gate == "Concurrency" for g in outcome.gates)


def test_concurrency_is_not_judged_while_another_gate_holds() -> None:
    p = named("limit", rules={"maxConcurrent": 1, "requiredApprovals": 1})
    outcome = gates.evaluate(spec(), observe(guard=guard(p, queue=(queued("a", -9, active=True),))))
    assert not any(g.gate == "Concurrency" for g in outcome.gates)


def test_a_high_blast_radius_needs_a_senior_even_without_ai() -> None:
    p = named("tier-1", rules={"requiredApprovals": 1, "seniorGroups": ["senior-engineers"],
                               "blastRadius": {"maxSharePercent": 50}})
    g = guard(p, approvals=(approval("bob"),), service_pods=12)
    outcome = gates.evaluate(spec(), observe(guard=g))
    assert outcome.blast_radius.high and outcome.blast_radius.share_percent == 83  # type: ignore[union-attr]
    assert "high blast radius" in outcome.approved.message
    small = gates.evaluate(spec(), observe(guard=guard(p, approvals=(approval("bob"),), service_pods=40)))
    assert small.approved.ok and small.blast_radius.share_percent == 25  # type: ignore[union-attr]


@pytest.mark.parametrize(("image", "tag"), [
    ("shop", None), ("shop:1.2", "1.2"), ("registry:5000/shop", None), ("registry:5000/shop:latest", "latest"),
    ("shop@sha256:" + "a" * 64, None),
])
def test_image_tags_are_read_past_registry_ports(image: str, tag: str | None) -> None:
    assert image_tag(image) == tag


def test_template_rules_name_the_rule_and_the_field() -> None:
    template = {"spec": {"containers": [{"name": "app", "image": "shop:latest"}]}}
    findings = check_template(spec(), template, replicas=1)
    assert [(f.rule, f.field) for f in findings] == [
        ("ImageNotLatest", "spec.change.containers[0].image"),
        ("ResourcesPresent", "the target's spec.template.spec.containers[0].resources.requests"),
        ("ResourcesPresent", "the target's spec.template.spec.containers[0].resources.limits"),
        ("ReadinessProbe", "the target's spec.template.spec.containers[0].readinessProbe"),
        ("EnoughReplicas", "spec.target.name"),
    ]
    digest = {"spec": {"containers": [{**pod_template()["spec"]["containers"][0], "image": "s@sha256:" + "0" * 64}]}}
    assert check_template(spec(), digest, replicas=2) == []


def test_no_dry_run_is_no_pass() -> None:
    outcome = gates.evaluate(spec(), observe(guard=GuardObservation(created=stamp(T0))))
    assert not outcome.validated.ok and outcome.validated.reason == "DryRunPending"
    refused = gates.evaluate(spec(), observe(guard=guard(dry_run_error="spec.template: Invalid value")))
    assert refused.validated.reason == "DryRun" and "Invalid value" in refused.validated.message


# -- found in review: each of these opened a gate or held one for ever ---------------------------

def test_no_service_means_the_target_is_the_whole_service() -> None:
    p = named("tier-1", rules={"blastRadius": {"maxSharePercent": 50}})
    outcome = gates.evaluate(spec(), observe(guard=guard(p, service_pods=None)))
    assert outcome.blast_radius.share_percent == 100 and outcome.blast_radius.high  # type: ignore[union-attr]


def test_a_policy_this_operator_cannot_read_holds_what_it_may_govern() -> None:
    from guarded.api.policy import PolicySelector
    from guarded.core.policy import UnreadablePolicy
    anyone = UnreadablePolicy(name="future", selector=None, error="extra field")
    others = UnreadablePolicy(name="other-team", error="extra field", selector=PolicySelector.model_validate(
        {"targetSelector": {"matchLabels": {"team": "other"}}}))
    held = gates.evaluate(spec(), observe(guard=guard(unreadable_policies=(anyone,))))
    assert not held.admitted.ok and held.admitted.reason == "PolicyUnreadable" and "future" in held.admitted.message
    assert gates.evaluate(spec(), observe(guard=guard(unreadable_policies=(others,)))).clear


def test_init_container_images_are_pinned_too() -> None:
    template = pod_template()
    template["spec"]["initContainers"] = [{"name": "migrate", "image": "busybox:latest"}]
    findings = check_template(spec(), template, replicas=2)
    assert [(f.rule, f.field) for f in findings] == [
        ("ImageNotLatest", "the target's spec.template.spec.initContainers[0].image")]


def test_window_times_without_a_zone_are_utc() -> None:
    from guarded.core.clock import parse
    assert parse("2026-11-27T00:00:00") == parse("2026-11-27T00:00:00Z")
