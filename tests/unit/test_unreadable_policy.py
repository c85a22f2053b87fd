"""A stored policy the operator cannot read holds the rollouts it may select, naming the field to fix.

Found by fuzzing (tests/integration/test_fuzz_input.py): the API server accepts a list for a
`format: date-time` string (freezeWindows[0].start: []), and the held rollouts said only
"1 validation error for RolloutPolicySpec", naming nothing."""

from __future__ import annotations

from guarded.kube.guard import _policies


def test_an_unreadable_policy_names_the_field_it_cannot_read() -> None:
    item = {"metadata": {"name": "freeze"},
            "spec": {"selector": {"namespaceSelector": {"matchLabels": {"team": "shop"}}},
                     "freezeWindows": [{"start": [], "end": "2030-01-02T00:00:00Z"}]}}
    readable, unreadable = _policies([item])
    assert readable == ()
    [policy] = unreadable
    assert policy.name == "freeze" and policy.selector is not None
    assert policy.error.startswith("spec.freezeWindows[0].start: "), policy.error
