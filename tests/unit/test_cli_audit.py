"""The audit report of `kubectl guarded audit`, built and rendered from plain dicts (no cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from guarded.cli import audit
from guarded.cli.tables import dump, parse_bound

NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
EVERYTHING = audit.Range()


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def judgement(metric: str, **evidence: object) -> dict:
    base = {"judge": "Stable", "verdict": "Pass", "canaryEvents": 15.0, "canaryRequests": 301.0,
            "referenceEvents": 150.0, "referenceRequests": 2990.0, "canaryRatio": 0.04983, "referenceRatio": 0.05017,
            "thresholdRho": 0.8, "logLr": -6.31, "logThreshold": 5.99, "reason": "not degraded"}
    return {"metric": metric, "verdict": evidence.get("verdict", "Pass"), "reason": "", "evidence": [base | evidence]}


def rollout(name: str = "shop-2-0-0", namespace: str = "shop", created: float = 30, **status: object) -> dict:
    """A rollout by alice, approved by bob (counted) and by alice's own approval that could not count."""
    history = [
        {"time": at(created), "reason": "AwaitingApproval", "message": "Approvals: waiting for 0/1 approvals"},
        {"time": at(created - 1), "reason": "ApprovalCounted", "message": "bob (engineers) approved revision 2"},
        {"time": at(created - 1), "reason": "RolloutStarted", "message": "rolling out", "wave": 0},
        {"time": at(created - 2), "reason": "WaveStarted", "message": "wave 2/2", "wave": 1},
        {"time": at(created - 3), "reason": "RollingBack", "message": "order-rate Fail", "wave": 1},
        {"time": at(created - 3), "reason": "RolledBack", "message": "rolled back: AnalysisFailed", "wave": 1},
    ]
    base = {
        "phase": "RolledBack", "message": "rolled back: AnalysisFailed", "rollbackReason": "AnalysisFailed",
        "startedAt": at(created - 1), "completedAt": at(created - 3), "authors": ["alice"],
        "approvals": [
            {"name": "shop-2-0-0-approval-b0b", "approver": "bob", "groups": ["engineers", "system:authenticated"],
             "revision": 2, "counted": True, "reason": ""},
            {"name": "shop-2-0-0-approval-old", "approver": "carol", "groups": ["senior-engineers"], "revision": 1,
             "counted": False, "reason": "stale: approves revision 1, the spec is now at revision 2"},
        ],
        "gates": [{"gate": "Validation", "passed": True, "reason": "Passed", "message": "the change passed"},
                  {"gate": "Approvals", "passed": True, "reason": "Approved", "message": "approved by bob"}],
        "validation": [],
        "policy": {"policies": ["tier-1"], "safetyResets": [],
                   "rules": [{"rule": "requiredApprovals", "value": "1", "setBy": ["tier-1"]},
                             {"rule": "minBake", "value": "5m", "setBy": ["tier-1", "company"]}]},
        "blastRadius": {"pods": 10, "servicePods": 10, "sharePercent": 100, "namespaces": [namespace],
                        "high": False, "reason": "10 pods, within the policy line"},
        "analysis": {"recent": [
            {"time": at(created - 2 + i / 10), "wave": 1, "verdict": "Pass", "intervals": i,
             "judgements": [judgement("order-rate")]} for i in range(4)
        ] + [{"time": at(created - 2.9), "wave": 1, "verdict": "Fail", "intervals": 5, "alerts": ["ShopDown"],
              "judgements": [judgement("order-rate", verdict="Fail", canaryEvents=2.0, canaryRatio=0.0066)]}]},
        "history": history,
    }
    return {
        "apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 2,
                     "creationTimestamp": at(created)[:19] + "Z"},
        "spec": {"target": {"name": "shop"}, "aiAssisted": True, "description": "New checkout | flow",
                 "ticket": "SHOP-1234", "change": {"containers": [{"name": "app", "image": "shop:2.0.0"}]}},
        "status": {**base, **status},
    }


def approval(name: str, rollout_name: str = "shop-2-0-0", namespace: str = "shop", **spec: object) -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": at(29)[:19] + "Z"},
            "spec": {"rollout": rollout_name, "revision": 2, "comment": "", "rolloutUid": f"uid-{rollout_name}",
                     **spec}}


APPROVALS = [
    approval("shop-2-0-0-approval-b0b", approver="bob", approverGroups=["engineers", "system:authenticated"],
             comment="reviewed SHOP-1234"),
    approval("shop-2-0-0-approval-dav", approver="dave", approverGroups=["engineers"]),
    approval("shop-2-0-0-approval-gone", approver="erin", rolloutUid="uid-of-an-earlier-shop-2-0-0"),
    approval("shop-2-0-0-approval-else", namespace="other", approver="frank"),
]


def report(*rollouts: dict, rng: audit.Range = EVERYTHING) -> dict:
    return audit.build_report(list(rollouts), APPROVALS, rng=rng, now=NOW, scope="namespace shop")


# -- time bounds ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("24h", NOW - timedelta(hours=24)), ("7d", NOW - timedelta(days=7)), ("1h30m", NOW - timedelta(minutes=90)),
    ("2026-03-01T08:00:00Z", datetime(2026, 3, 1, 8, tzinfo=UTC)),
    ("2026-03-01T10:00:00+02:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
    ("2026-03-01T08:00:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
])
def test_since_and_until_take_rfc3339_times_or_durations_back_from_now(text, expected):
    assert parse_bound(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "24", "-1h", ""])
def test_other_time_bounds_are_refused(text):
    with pytest.raises(ValueError, match="neither an RFC 3339 time"):
        parse_bound(text, NOW)


# -- the report ----------------------------------------------------------------------------

def test_a_rollout_is_reported_when_created_or_changed_in_range_and_its_timeline_is_cut_to_it():
    old, recent = rollout("old", created=100), rollout("recent", created=10)
    lingering = rollout("lingering", created=100)
    lingering["status"]["history"].append({"time": at(1), "reason": "RetryRequested", "message": "again"})
    rng = audit.Range(since=parse_bound("24h", NOW), until=parse_bound("2h", NOW))
    built = report(old, recent, lingering, rng=rng)
    assert [r["name"] for r in built["rollouts"]] == ["recent"], "lingering's only entry in range is after until"

    built = report(old, recent, lingering, rng=audit.Range(since=parse_bound("24h", NOW)))
    assert [r["name"] for r in built["rollouts"]] == ["lingering", "recent"]
    assert [e["reason"] for e in built["rollouts"][0]["timeline"]] == ["RetryRequested"]
    assert (built["since"], built["until"]) == ("2026-03-01T12:00:00Z", None)
    assert len(report(old, recent, lingering)["rollouts"]) == 3, "no bounds: everything"


def test_approvers_are_the_counted_approvals_and_every_approval_of_the_rollout_is_listed():
    [record] = report(rollout())["rollouts"]
    assert record["authors"] == ["alice"]
    assert record["approvers"] == [{"name": "bob", "groups": ["engineers", "system:authenticated"],
                                    "approval": "shop-2-0-0-approval-b0b", "revision": 2}]
    listed = {a["name"]: (a["approver"], a["counted"], a["reason"]) for a in record["approvals"]}
    assert listed == {
        "shop-2-0-0-approval-b0b": ("bob", True, ""),
        "shop-2-0-0-approval-dav": ("dave", None, audit.NOT_JUDGED),
        "shop-2-0-0-approval-old": ("carol", False, "stale: approves revision 1, the spec is now at revision 2"),
    }, "erin's approved an earlier rollout of the same name, frank's is in another namespace"
    assert next(a for a in record["approvals"] if a["approver"] == "bob")["comment"] == "reviewed SHOP-1234"
    assert next(a for a in record["approvals"] if a["approver"] == "carol").get("deleted") is True


def test_the_report_holds_documentation_gates_policy_blast_radius_evidence_and_outcome():
    [record] = report(rollout())["rollouts"]
    assert record["aiAssisted"] is True and record["revision"] == 2
    assert record["documentation"] == {"description": "New checkout | flow", "ticket": "SHOP-1234",
                                       "rollbackPlan": None}
    assert record["change"]["summary"] == "app: image shop:2.0.0"
    assert record["validation"] == {"passed": True, "findings": []}
    assert [(g["gate"], g["passed"]) for g in record["gates"]] == [("Validation", True), ("Approvals", True)]
    assert {"rule": "minBake", "value": "5m", "setBy": ["tier-1", "company"]} in record["policy"]["rules"]
    assert record["blastRadius"]["sharePercent"] == 100
    assert [(a["verdict"], a["intervals"]) for a in record["analysis"]] == [("Pass", 2), ("Pass", 3), ("Fail", 5)]
    last = record["analysis"][-1]
    assert last["wave"] == 2 and last["alerts"] == ["ShopDown"], "waves are numbered from 1"
    assert last["judgements"][0]["evidence"][0]["canaryEvents"] == 2.0
    assert record["outcome"]["phase"] == "RolledBack" and record["outcome"]["rollbackReason"] == "AnalysisFailed"
    assert record["outcome"]["completedAt"] == at(27)
    assert [e["wave"] for e in record["timeline"]] == [None, None, 1, 2, 2, 2]
    assert json.loads(dump(report(rollout()), "json"))["kind"] == "GuardedRolloutAudit"
    assert "&id" not in dump(report(rollout()), "yaml"), "no YAML anchors for shared lists"


def test_a_rollout_not_yet_judged_by_the_operator_is_reported_with_what_is_known():
    bare = {"metadata": {"name": "new", "namespace": "shop", "creationTimestamp": at(1)[:19] + "Z",
                         "annotations": {"rollouts.guarded.dev/authors": '["dave"]'}},
            "spec": {"target": {"name": "shop"}, "change": {}}}
    [record] = report(bare)["rollouts"]
    assert record["authors"] == ["dave"], "from the annotation admission stamped"
    assert (record["approvers"], record["approvals"], record["gates"], record["policy"]) == ([], [], [], None)
    assert record["outcome"]["phase"] == "Pending" and record["validation"]["passed"] is None


# -- Markdown ------------------------------------------------------------------------------

def test_the_markdown_report_summarises_then_details_each_rollout():
    text = audit.render_markdown(report(rollout()))
    lines = text.splitlines()
    assert lines[0] == "# GuardedRollout audit"
    assert lines[2].startswith("Scope: namespace shop, from the beginning to now. Generated 2026-03-02T12:00:00Z.")
    assert lines[4:7] == [
        "| Rollout | Outcome | Authors | Approved by | AI-assisted | Created |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| shop/shop-2-0-0 | RolledBack (AnalysisFailed) at {at(27)} | alice | bob (engineers) | yes | "
        f"{at(30)[:19]}Z |",
    ]
    assert f"## shop/shop-2-0-0: RolledBack (AnalysisFailed) at {at(27)}" in lines
    assert "| Description | New checkout \\| flow |" in lines, "pipes in cells are escaped"
    assert "| Rollback plan | - |" in lines
    assert ("| shop-2-0-0-approval-old (deleted) | carol | senior-engineers | 1 | no: stale: approves revision 1, "
            "the spec is now at revision 2 | - | - |") in lines
    assert "| minBake | 5m | tier-1, company |" in lines
    assert ("10 pods, 100% of the 10 pods behind its Services, in shop; not high: 10 pods, within the policy line"
            in lines)
    fail = next(line for line in lines if "| Fail |" in line and "order-rate" in line)
    assert fail.split(" | ")[3:] == ["order-rate", "Stable", "Fail", "2/301", "0.0066", "0.05017", "0.8",
                                     "-6.31 / 5.99", "not degraded |"]
    assert any(line.endswith("| alerts | - | Fail | - | - | - | - | - | firing: ShopDown |") for line in lines)
    assert f"| {at(27)} | 2 | RolledBack | rolled back: AnalysisFailed |" in lines
    headings = [line for line in lines if line.startswith("### ")]
    assert headings == ["### Approvals", "### Gates", "### Policy", "### Blast radius",
                        "### Analysis (the newest 3 judgements in range)", "### Timeline"]


def test_an_empty_range_says_so():
    text = audit.render_markdown(report(rollout(created=100), rng=audit.Range(since=parse_bound("1h", NOW))))
    assert "0 rollouts." in text and text.endswith("No rollout was created or changed in this range.")


# -- configuration and consumers -------------------------------------------------------------

def shared_config(name: str = "shop-config-7f3a") -> dict:
    """A shared ConfigMap and Secret change of shop and orders, promoted."""
    obj = rollout(name, phase="Succeeded", rollbackReason=None, message="promoted",
                  config=[{"kind": "ConfigMap", "name": "shop-config", "version": "shop-config-5e8d41c0b7"},
                          {"kind": "Secret", "name": "shop-secret", "version": "shop-secret-0a1b2c3d4e"}],
                  consumers=[{"name": "shop", "rollout": name, "phase": "Succeeded", "stage": "Succeeded",
                              "waveProgress": "4/4", "canaryReplicas": 0, "stableReplicas": 10, "message": ""},
                             {"name": "orders", "rollout": f"{name}-orders", "phase": "Succeeded",
                              "stage": "Succeeded", "waveProgress": "3/3", "message": "promoted"}])
    obj["spec"]["consumers"] = [{"name": "orders"}]
    obj["spec"]["change"] = {"configMaps": [{"name": "shop-config", "data": {"settings.json": '{"v2": true}'},
                                             "removeKeys": ["OLD_FLAG"]}],
                             "secrets": [{"name": "shop-secret", "contentFrom": "shop-secret-0a1b2c3d4e"}]}
    return obj


def test_the_report_names_the_configuration_versions_and_the_consumers():
    child = rollout("shop-config-7f3a-orders")
    child["metadata"]["labels"] = {"rollouts.guarded.dev/part-of": "shop-config-7f3a"}
    parent_record, child_record = report(shared_config(), child)["rollouts"]
    assert parent_record["change"]["summary"] == "ConfigMap shop-config; Secret shop-secret"
    assert parent_record["config"] == [
        {"kind": "ConfigMap", "name": "shop-config", "version": "shop-config-5e8d41c0b7", "contentFrom": None,
         "keys": ["settings.json"], "removedKeys": ["OLD_FLAG"]},
        {"kind": "Secret", "name": "shop-secret", "version": "shop-secret-0a1b2c3d4e",
         "contentFrom": "shop-secret-0a1b2c3d4e", "keys": [], "removedKeys": []},
    ]
    assert parent_record["consumers"] == [
        {"name": "shop", "rollout": "shop-config-7f3a", "phase": "Succeeded", "stage": "Succeeded",
         "waveProgress": "4/4", "message": ""},
        {"name": "orders", "rollout": "shop-config-7f3a-orders", "phase": "Succeeded", "stage": "Succeeded",
         "waveProgress": "3/3", "message": "promoted"},
    ]
    assert parent_record["partOf"] is None and child_record["partOf"] == "shop-config-7f3a"
    plain = report(rollout())["rollouts"][0]
    assert (plain["config"], plain["consumers"], plain["partOf"]) == ([], [], None)


def test_the_consumers_of_a_rollout_not_started_yet_are_its_spec():
    obj = shared_config()
    obj["status"]["consumers"] = []
    assert [(c["name"], c["rollout"]) for c in report(obj)["rollouts"][0]["consumers"]] == [
        ("shop", "shop-config-7f3a"), ("orders", None)]


def test_the_markdown_report_has_a_configuration_and_consumers_section():
    child = rollout("shop-config-7f3a-orders")
    child["metadata"]["labels"] = {"rollouts.guarded.dev/part-of": "shop-config-7f3a"}
    lines = audit.render_markdown(report(shared_config(), child)).splitlines()
    start = lines.index("### Configuration and consumers")
    assert lines[start:start + 12] == [
        "### Configuration and consumers",
        "",
        "| Kind | Name | Version | New content |",
        "| --- | --- | --- | --- |",
        "| ConfigMap | shop-config | shop-config-5e8d41c0b7 | sets settings.json; removes OLD_FLAG |",
        "| Secret | shop-secret | shop-secret-0a1b2c3d4e | all of Secret shop-secret-0a1b2c3d4e |",
        "",
        "| Deployment | Rollout | Phase | Stage | Wave |",
        "| --- | --- | --- | --- | --- |",
        "| shop | shop-config-7f3a | Succeeded | Succeeded | 4/4 |",
        "| orders | shop-config-7f3a-orders | Succeeded | Succeeded | 3/3 |",
        "",
    ]
    assert lines[start + 12] == "### Approvals"
    assert "| Part of | shop-config-7f3a |" in lines
    assert lines.count("### Configuration and consumers") == 1, "the child changes no configuration here"
