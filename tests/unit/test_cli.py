"""The kubectl plugin's pure parts on plain dicts: tables, the status view, parsing, the waiting loops and
`approve` against a fake API (the audit report has its own file, test_cli_audit.py)."""

from __future__ import annotations

import base64
import copy
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_time import FakeTime
from kubernetes.client.rest import ApiException

from guarded.cli import commands, flow, parser, tables, view
from guarded.cli.errors import EXIT_ERROR, EXIT_NO_ANSWER, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from guarded.cli.kube import api_error
from guarded.cli.main import main

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def evidence(judge: str, **fields: object) -> dict:
    base = {"judge": judge, "verdict": "Pass", "canaryEvents": 12.0, "canaryRequests": 300.0,
            "referenceEvents": 150.0, "referenceRequests": 3000.0, "canaryRatio": 0.04, "referenceRatio": 0.05,
            "thresholdRho": 0.8, "logLr": -6.25, "logThreshold": 5.9915, "reason": "no degradation"}
    return {**base, **fields}


def rollout(name: str = "shop-2-0-0", namespace: str = "shop", **status: object) -> dict:
    """A GuardedRollout as the API returns it, in wave 2 of the default waves unless told otherwise."""
    base_status = {
        "phase": "Progressing", "stage": "Bake", "message": "wave 2/4: baking 60s (until 12:01:00Z)",
        "wave": 1, "wavesTotal": 4, "waveProgress": "2/4", "canaryWeight": 10, "canaryReplicas": 1,
        "stableReplicas": 10,
        "conditions": [
            {"type": "TargetFound", "status": "True", "reason": "Found", "message": "Deployment 'shop' found",
             "lastTransitionTime": "2026-03-01T11:58:00Z"},
            {"type": "Progressing", "status": "True", "reason": "Baking", "message": "stage Bake",
             "lastTransitionTime": "2026-03-01T11:58:00Z"},
        ],
        "analysis": {"recent": [
            {"time": "2026-03-01T11:59:00Z", "wave": 0, "verdict": "Inconclusive", "intervals": 1},
            {"time": "2026-03-01T11:59:55Z", "wave": 1, "verdict": "Pass", "intervals": 7, "alerts": [],
             "judgements": [
                 {"metric": "order-rate", "verdict": "Pass", "reason": "",
                  "evidence": [evidence("Stable"), evidence("PreRollout", referenceRatio=0.0523, thresholdRho=0.5)]},
                 {"metric": "error-rate", "verdict": "Inconclusive", "reason": "",
                  "evidence": [evidence("Stable", verdict="Inconclusive", canaryEvents=1.0, canaryRequests=40.0,
                                        canaryRatio=None, referenceRatio=0.005, thresholdRho=1.2, logLr=0.5,
                                        reason="too few canary requests (40 < 100)")]},
             ]},
        ]},
        "lastRequest": {"id": "ab12cd34", "action": "pause", "result": "Rejected",
                        "message": "cannot pause in stage Promote", "time": "2026-03-01T11:59:30Z"},
        "history": [
            {"time": "2026-03-01T11:58:00Z", "wave": 0, "reason": "WaveStarted", "message": "wave 1/4 (1 pods)"},
            {"time": "2026-03-01T11:59:00Z", "wave": 1, "reason": "WaveStarted", "message": "wave 2/4 (10%)"},
            {"time": "2026-03-01T11:59:01Z", "reason": "Note", "message": "line one\nline two"},
        ],
    }
    return {
        "apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-03-01T11:57:00Z",
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2.0.0"}]}},
        "status": {**base_status, **status},
    }


# -- tables --------------------------------------------------------------------------------

def test_a_table_aligns_columns_three_spaces_apart_and_does_not_pad_the_last():
    text = tables.format_table(["NAME", "PHASE", "MESSAGE"], [["a", "Progressing", "x"], ["long-name", None, "y"]])
    assert text.splitlines() == [
        "NAME        PHASE         MESSAGE",
        "a           Progressing   x",
        "long-name                 y",
    ]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (119, "119s"), (200, "3m20s"), (300, "5m"), (17 * 60, "17m"),
    (5 * 3600 + 12 * 60, "5h12m"), (20 * 3600, "20h"), (3 * 86400 + 4 * 3600, "3d4h"), (40 * 86400, "40d"),
    (-5, "0s"),
])
def test_ages_read_like_kubectl(seconds, text):
    assert tables.human_duration(seconds) == text


def test_list_shows_target_phase_wave_canary_age_and_message():
    items = [rollout("b-release"), rollout("a-release", status=None) | {"status": {}}]
    lines = tables.list_table(items, NOW).splitlines()
    assert lines[0].split() == ["NAME", "TARGET", "PHASE", "WAVE", "CANARY", "AGE", "MESSAGE"]
    assert lines[1].split() == ["a-release", "shop", "3m"]
    assert lines[2].split()[:6] == ["b-release", "shop", "Progressing", "2/4", "10%", "3m"]
    assert lines[2].endswith("wave 2/4: baking 60s (until 12:01:00Z)")


def test_list_across_namespaces_adds_a_namespace_column_and_sorts_by_it():
    items = [rollout("x", "zeta"), rollout("y", "alpha")]
    lines = tables.list_table(items, NOW, all_namespaces=True).splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "zeta"]


def test_history_numbers_waves_from_one_and_keeps_messages_on_one_line():
    lines = tables.history_table(rollout()["status"]).splitlines()
    assert lines[0].split() == ["TIME", "WAVE", "REASON", "MESSAGE"]
    assert lines[1].split()[:3] == ["2026-03-01T11:58:00Z", "1", "WaveStarted"]
    assert lines[2].split()[:3] == ["2026-03-01T11:59:00Z", "2", "WaveStarted"]
    assert lines[3].split()[1:] == ["Note", "line", "one", "line", "two"]


def test_json_and_yaml_output_drop_managed_fields_like_kubectl():
    obj = tables.without_managed_fields(rollout())
    assert "managedFields" not in obj["metadata"]
    assert json.loads(tables.dump(tables.as_list([rollout()]), "json"))["items"][0]["metadata"]["name"] == "shop-2-0-0"
    assert tables.dump(obj, "yaml").startswith("apiVersion: rollouts.guarded.dev/v1alpha1\nkind: GuardedRollout\n")


# -- the status view -----------------------------------------------------------------------

@pytest.mark.parametrize(("done", "total", "bar"), [
    (2, 4, "[##########----------]"), (0, 4, "[--------------------]"), (4, 4, "[####################]"),
    (1, 3, "[#######-------------]"), (0, 0, "[--------------------]"),
])
def test_progress_bar(done, total, bar):
    assert view.progress_bar(done, total) == bar


def test_progress_counts_the_current_wave_and_everything_once_promoted():
    assert view.progress_line(rollout()) == "[##########----------] wave 2/4"
    assert view.progress_line(rollout(phase="Succeeded", stage="Succeeded")) == "[####################] wave 4/4"
    pending = rollout(phase="Pending", stage="Pending", wave=None)
    del pending["status"]["wavesTotal"]
    assert view.progress_line(pending) == "[--------------------] wave 0/4", "the default four waves"


def test_wave_states_mark_done_current_pending_and_rolled_back():
    assert view.wave_states(4, rollout()["status"]) == ["done", "current: baking", "pending", "pending"]
    assert view.wave_states(3, {"phase": "RolledBack", "stage": "RolledBack", "wave": 1}) == [
        "done", "rolled back", "pending"]
    assert view.wave_states(2, {"phase": "Paused", "stage": "Bake", "wave": 0, "paused": True}) == [
        "current: paused", "pending"]
    assert view.wave_states(2, {"phase": "Progressing", "stage": "Cleanup", "wave": 1}) == ["done", "done"]
    assert view.wave_states(2, {}) == ["pending", "pending"]


def test_status_view_shows_phase_target_waves_replicas_conditions_analysis_and_request():
    text = view.status_view(rollout())
    lines = text.splitlines()
    assert "Phase:        Progressing (stage Bake)" in lines
    assert "Message:      wave 2/4: baking 60s (until 12:01:00Z)" in lines
    assert "Target:       Deployment/shop" in lines
    assert "Change:       app: image shop:2.0.0" in lines
    assert "Replicas:     canary 1 (10% of ready pods), stable 10 (the target's count before the rollout)" in lines
    assert "Waves:        [##########----------] wave 2/4  (default waves)" in lines
    waves = [line.split() for line in lines if line.startswith(("  >", "    "))][:5]
    assert waves[1:] == [["1", "1", "pod", "bake", "60s", "done"],
                         [">", "2", "10%", "(1", "pod)", "bake", "60s", "current:", "baking"],
                         ["3", "50%", "(5", "pods)", "bake", "60s", "pending"],
                         ["4", "100%", "(10", "pods)", "bake", "60s", "pending"]]
    assert any(line.split() == ["TargetFound", "True", "Found", "Deployment", "'shop'", "found"] for line in lines)
    assert "Analysis:     Pass at 2026-03-01T11:59:55Z (wave 2, 7 intervals)" in lines
    assert "  order-rate: Pass" in lines and "  error-rate: Inconclusive" in lines
    stable = next(line.split() for line in lines if line.strip().startswith("Stable       Pass"))
    assert stable == ["Stable", "Pass", "12/300", "0.04", "0.05", "0.8", "-6.25", "/", "5.99", "no", "degradation"]
    prerollout = next(line.split() for line in lines if line.strip().startswith("PreRollout"))
    assert prerollout[3:6] == ["0.04", "0.0523", "0.5"]
    computed = next(line.split() for line in lines if "too few" in line)
    assert computed[2:8] == ["1/40", "0.025", "0.005", "1.2", "0.5", "/"], "the ratio is computed when absent"
    assert ("Last request: pause (id ab12cd34): Rejected at 2026-03-01T11:59:30Z: cannot pause in stage Promote"
            in lines)


def test_status_view_of_a_new_rollout_with_explicit_waves_and_no_status():
    obj = rollout()
    obj["status"] = {}
    obj["spec"]["waves"] = [{"replicas": 2, "bake": "2m"}, {"weight": 100, "bake": "5m", "manualGate": True}]
    text = view.status_view(obj)
    assert "Phase:        Pending" in text
    assert "Waves:        [--------------------] wave 0/2" in text
    assert "manual gate" in text and "2 pods" in text
    assert "Conditions:   <none>" in text and "Analysis:     <none yet>" in text and "Last request: <none>" in text


def test_status_view_of_a_rolled_back_rollout_names_the_reason_and_marks_the_wave():
    text = view.status_view(rollout(phase="RolledBack", stage="RolledBack", rollbackReason="Aborted",
                                    message="rolled back: Aborted"))
    assert "Rollback:     Aborted" in text
    assert any(line.split()[:2] == [">", "2"] and line.endswith("rolled back") for line in text.splitlines())


GUARDED_STATUS = {
    "phase": "AwaitingApproval", "stage": "Pending", "wave": None, "canaryWeight": None, "authors": ["alice"],
    "approvals": [
        {"name": "r-approval-1", "approver": "bob", "groups": ["engineers", "system:authenticated"], "revision": 2,
         "counted": True, "reason": ""},
        {"name": "r-approval-2", "approver": "alice", "groups": ["engineers"], "revision": 2, "counted": False,
         "reason": "an author cannot approve their own change"},
    ],
    "gates": [
        {"gate": "Validation", "passed": True, "reason": "Passed", "message": "the change passed every check"},
        {"gate": "Approvals", "passed": False, "reason": "AwaitingApproval",
         "message": "waiting for 1/2 approvals of revision 2 (required by tier-1; authors alice cannot approve)"},
    ],
    "policy": {"policies": ["tier-1", "company"], "safetyResets": ["tier-1"],
               "rules": [{"rule": "requiredApprovals", "value": "2", "setBy": ["tier-1/safetyReset"]},
                         {"rule": "minBake", "value": "5m", "setBy": ["company"]}]},
    "lastRequest": {"id": "ab12", "action": "pause", "result": "Accepted", "message": "", "time": "t", "by": "carol"},
}


def test_status_view_shows_authors_gates_approvals_and_the_policy_rules_with_who_set_them():
    lines = view.status_view(rollout(**GUARDED_STATUS)).splitlines()
    assert "Authors:      alice" in lines
    gates = lines.index("Gates:")
    assert [line.split()[:3] for line in lines[gates + 1:gates + 4]] == [
        ["GATE", "PASSED", "REASON"], ["Validation", "yes", "Passed"], ["Approvals", "no", "AwaitingApproval"]]
    assert "Approvals:    1/2 counted: bob (engineers)" in lines
    assert any(line.split() == ["r-approval-1", "bob", "engineers,", "system:authenticated", "2", "yes"]
               for line in lines)
    assert any(line.split()[:5] == ["r-approval-2", "alice", "engineers", "2", "no:"]
               and line.endswith("an author cannot approve their own change") for line in lines)
    assert "Policy:       tier-1, company (safety reset active: tier-1)" in lines
    assert any(line.split() == ["requiredApprovals", "2", "tier-1/safetyReset"] for line in lines)
    assert "Last request: pause (id ab12) by carol: Accepted at t" in lines


def test_status_view_names_the_authors_from_admission_before_the_operator_judged_the_gates():
    obj = rollout()
    obj["status"] = {}
    obj["metadata"]["annotations"] = {"rollouts.guarded.dev/authors": '["alice", "dave"]'}
    lines = view.status_view(obj).splitlines()
    assert "Authors:      alice, dave" in lines
    assert "Gates:        <not evaluated yet>" in lines
    assert "Approvals:    <not judged yet>" in lines and "Policy:       <not evaluated yet>" in lines
    obj["status"] = {"gates": [{"gate": "Approvals", "passed": True, "reason": "NotRequired"}]}
    lines = view.status_view(obj).splitlines()
    assert "Approvals:    none required" in lines and "Policy:       <none applies>" in lines


def test_summary_line_for_watch_without_a_terminal():
    assert view.summary_line(rollout()) == (
        "Progressing  [##########----------] wave 2/4  canary 10%  wave 2/4: baking 60s (until 12:01:00Z)")


# -- argument parsing ----------------------------------------------------------------------

def test_global_flags_go_before_or_after_the_command():
    before = parser.parse_args(["-n", "shop", "--context", "c1", "--kubeconfig", "/k", "status", "r"])
    after = parser.parse_args(["status", "r", "-n", "shop", "--context", "c1", "--kubeconfig", "/k"])
    for args in (before, after):
        assert (args.namespace, args.context, args.kubeconfig, args.name) == ("shop", "c1", "/k", "r")
        assert args.command == "status" and args.output == "table"
    defaults = parser.parse_args(["ls"])
    assert (defaults.command, defaults.namespace, defaults.context, defaults.all_namespaces) == (
        "list", None, None, False)


def test_request_commands_and_their_actions():
    assert parser.request_action(parser.parse_args(["promote", "r"])) == "promote"
    full = parser.parse_args(["promote", "r", "--full", "--wait", "0"])
    assert parser.request_action(full) == "promote-full" and full.wait == 0
    for action in ("abort", "pause", "resume", "retry"):
        args = parser.parse_args([action, "r"])
        assert parser.request_action(args) == action and args.wait == 15
    assert parser.parse_args(["watch", "r", "--timeout", "180"]).timeout == 180
    assert parser.parse_args(["list", "-A", "-o", "yaml"]).all_namespaces


def test_approve_and_audit_arguments():
    approve = parser.parse_args(["approve", "r", "-n", "shop"])
    assert (approve.command, approve.name, approve.revision, approve.comment, approve.wait) == (
        "approve", "r", None, "", 10.0)
    pinned = parser.parse_args(["approve", "r", "--revision", "3", "--comment", "LGTM, see SHOP-1", "--wait", "0"])
    assert (pinned.revision, pinned.comment, pinned.wait) == (3, "LGTM, see SHOP-1", 0)
    report = parser.parse_args(["audit"])
    assert (report.output, report.all_namespaces, report.since, report.until) == ("markdown", False, None, None)
    ranged = parser.parse_args(["audit", "-A", "--since", "24h", "--until", "2026-03-01T00:00:00Z", "-o", "json"])
    assert (ranged.all_namespaces, ranged.since, ranged.until, ranged.output) == (
        True, "24h", "2026-03-01T00:00:00Z", "json")


@pytest.mark.parametrize("argv", [[], ["status"], ["list", "-o", "wide"], ["frobnicate"], ["abort", "r", "--full"],
                                  ["abort", "r", "--wait", "-1"], ["watch", "r", "--timeout", "soon"],
                                  ["approve"], ["approve", "r", "--revision", "0"], ["approve", "r", "--revision", "x"],
                                  ["audit", "--since", "yesterday"], ["audit", "-o", "table"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == EXIT_USAGE
    assert "usage: kubectl guarded" in capsys.readouterr().err


COMMANDS = ["list", "status", "history", "watch", "abort", "pause", "resume", "promote", "retry", "approve", "audit"]


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in COMMANDS])
def test_help_describes_every_flag_and_gives_an_example(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "kubectl guarded " in out
    for flag in ("--namespace", "--context", "--kubeconfig"):
        assert flag in out
    if argv == ["--help"]:
        assert all(c in out for c in COMMANDS) and "exit codes:" in out
    extra = {"list": ["--all-namespaces", "--output"], "status": ["--output"], "history": ["--output"],
             "watch": ["--timeout"], "promote": ["--full", "--wait"], "abort": ["--wait"],
             "approve": ["--comment", "--revision", "--wait"],
             "audit": ["--all-namespaces", "--since", "--until", "--output"]}.get(argv[0], [])
    assert all(flag in out for flag in extra)


def test_main_reports_a_missing_kubeconfig_without_a_traceback(capsys, tmp_path):
    assert main(["list", "--kubeconfig", str(tmp_path / "nope")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Error: kubeconfig ") and "Traceback" not in err


# -- API errors ----------------------------------------------------------------------------

def test_not_found_and_forbidden_messages():
    missing = api_error(ApiException(status=404, reason="Not Found"), "shop", "nope")
    assert missing.message == 'Error: guardedrollout "nope" not found in namespace "shop"' and missing.code == 1
    denied = ApiException(status=403, reason="Forbidden")
    denied.body = json.dumps({"kind": "Status", "message": 'guardedrollouts "x" is forbidden: User "alice" cannot'})
    error = api_error(denied, "shop", "x")
    assert error.message == 'Error from server (Forbidden): guardedrollouts "x" is forbidden: User "alice" cannot'
    assert error.code == 1


def test_a_refusal_by_the_operators_admission_webhook_exits_3_with_its_reason():
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = json.dumps({"kind": "Status", "code": 403, "message": (
        'admission webhook "approval-identity.guarded-rollouts.rollouts.guarded.dev" denied the request: '
        "'alice' is an author of rollout 'r' (authors: alice)")})
    error = api_error(refused, "shop", kind="RolloutApproval")
    assert error.code == EXIT_REJECTED
    assert error.message == ('Error from server (Forbidden): admission webhook "approval-identity.guarded-rollouts.'
                             "rollouts.guarded.dev\" denied the request: 'alice' is an author of rollout 'r' "
                             "(authors: alice)")
    other = ApiException(status=403, reason="Forbidden")
    other.body = json.dumps({"message": 'admission webhook "policy.example.com" denied the request: no'})
    assert api_error(other, "shop").code == EXIT_ERROR, "only the operator's webhooks speak for the operator"
    missing = api_error(ApiException(status=404, reason="Not Found"), "shop", kind="RolloutApproval")
    assert missing.message == "Error: Not Found (is the RolloutApproval CRD installed?)"


# -- the request flow ----------------------------------------------------------------------



def answers(*statuses: dict | None):
    seq = list(statuses)

    def read_status() -> dict | None:
        return seq.pop(0) if len(seq) > 1 else seq[0]
    return read_status


def test_the_request_patch_is_one_json_annotation():
    patch = flow.request_patch("beef", "promote-full")
    value = patch["metadata"]["annotations"]["rollouts.guarded.dev/request"]
    assert json.loads(value) == {"id": "beef", "action": "promote-full"}
    assert len(flow.new_request_id()) == 16 and flow.new_request_id() != flow.new_request_id()
    with pytest.raises(ValueError):
        flow.request_patch("beef", "explode")


def test_an_accepted_request_exits_0_once_its_own_id_is_answered():
    t = FakeTime()
    read = answers(None, {"lastRequest": {"id": "old", "result": "Rejected", "message": "x"}},
                   {"lastRequest": {"id": "mine", "result": "Accepted", "message": ""}})
    answer = flow.await_answer("mine", read, 15, clock=t.clock, sleep=t.sleep)
    assert answer == flow.Answer(EXIT_OK, "accepted")
    assert t.sleeps == [0.5, 0.5]


def test_a_rejected_request_exits_3_with_the_operators_reason():
    read = answers({"lastRequest": {"id": "mine", "result": "Rejected", "message": "nothing to abort in stage X"}})
    assert flow.await_answer("mine", read, 15) == flow.Answer(EXIT_REJECTED, "rejected: nothing to abort in stage X")


def test_no_answer_within_the_wait_exits_4():
    t = FakeTime()
    answer = flow.await_answer("mine", answers({"lastRequest": {"id": "other"}}), 2, clock=t.clock, sleep=t.sleep)
    assert answer.code == EXIT_NO_ANSWER and "within 2s" in answer.text and "mine" in answer.text
    assert t.now == 2


def test_wait_0_does_not_read_the_status():
    def read() -> dict:
        raise AssertionError("not called")
    assert flow.await_answer("mine", read, 0).code == EXIT_OK


# -- watch ---------------------------------------------------------------------------------

def states(*phases_and_waves: tuple[str, int | None]):
    objs = [rollout(phase=p, wave=w, stage="Succeeded" if p == "Succeeded" else "Bake",
                    message=f"{p} {w}") for p, w in phases_and_waves]
    return answers(*objs)


def test_watch_prints_one_line_per_change_and_exits_0_on_success():
    t, lines = FakeTime(), []
    read = states(("Pending", None), ("Progressing", 0), ("Progressing", 0), ("Progressing", 1), ("Succeeded", 3))
    result = flow.watch(read, lines.append, tty=False, clock=t.clock, sleep=t.sleep, now=lambda: NOW)
    assert result == flow.WatchResult(EXIT_OK, "Succeeded")
    assert [line.split()[1] for line in lines] == ["Pending", "Progressing", "Progressing", "Succeeded"]
    assert lines[0].startswith("12:00:00Z  Pending  [--------------------] wave 0/4")
    assert "[####################] wave 4/4" in lines[-1]
    assert t.sleeps == [1.0] * 4


@pytest.mark.parametrize("phase", ["RolledBack", "Failed"])
def test_watch_exits_1_when_the_rollout_ends_otherwise(phase):
    result = flow.watch(states(("Progressing", 1), (phase, 1)), lambda _: None, tty=False, sleep=lambda _: None)
    assert result == flow.WatchResult(EXIT_ERROR, phase)


def test_watch_exits_2_on_timeout():
    t, lines = FakeTime(), []
    result = flow.watch(states(("Progressing", 1)), lines.append, tty=False, timeout=2.5,
                        clock=t.clock, sleep=t.sleep)
    assert result == flow.WatchResult(EXIT_USAGE, "Progressing", timed_out=True)
    assert t.sleeps == [1.0, 1.0, 0.5] and len(lines) == 1


def test_watch_on_a_terminal_redraws_the_status_view_with_a_progress_bar():
    frames: list[str] = []
    flow.watch(states(("Progressing", 1), ("Succeeded", 3)), frames.append, tty=True, sleep=lambda _: None,
               now=lambda: NOW + timedelta(seconds=5))
    assert len(frames) == 2 and all(f.startswith(flow.CLEAR_SCREEN) for f in frames)
    assert frames[0].splitlines()[0].endswith("Progressing  [##########----------] wave 2/4   "
                                              "(at 12:00:05Z; Ctrl-C stops watching)")
    assert "Name:         shop-2-0-0" in frames[1] and "Waves:        [####################] wave 4/4" in frames[1]


# -- approve -------------------------------------------------------------------------------

def test_an_approval_names_rollout_and_revision_and_never_the_approver():
    body = flow.approval_body("shop-2-0-0", 3, "LGTM")
    assert body == {"apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "RolloutApproval",
                    "metadata": {"generateName": "shop-2-0-0-approval-"},
                    "spec": {"rollout": "shop-2-0-0", "revision": 3, "comment": "LGTM"}}


def test_waiting_for_the_operator_to_judge_an_approval():
    t = FakeTime()
    judged = {"phase": "Progressing", "approvals": [{"name": "mine", "approver": "bob", "counted": True}]}
    status, seen = flow.await_judgement("mine", answers({"phase": "AwaitingApproval"}, judged), 10,
                                        clock=t.clock, sleep=t.sleep)
    assert seen == judged["approvals"][0] and status is judged and t.sleeps == [0.5]

    status, seen = flow.await_judgement("mine", answers({"phase": "AwaitingApproval"}), 2, clock=t.clock,
                                        sleep=t.sleep)
    assert seen is None and status == {"phase": "AwaitingApproval"}, "gives up after --wait"

    t.sleeps.clear()
    _, seen = flow.await_judgement("mine", answers({"phase": "Succeeded", "approvals": []}), 10, clock=t.clock,
                                   sleep=t.sleep)
    assert seen is None and t.sleeps == [], "past its gates the operator judges no more approvals"


class FakeKube:
    """The two calls `approve` makes, with the rollout's status changing once the approval exists."""

    def __init__(self, obj: dict, after: dict) -> None:
        self.obj, self.after = obj, after
        self.created: list[dict] = []

    def namespace(self, explicit: str | None) -> str:
        return explicit or "default"

    def get(self, namespace: str, name: str) -> dict:
        return self.after if self.created else self.obj

    def create_approval(self, namespace: str, body: dict) -> dict[str, Any]:
        self.created.append(body)
        spec = {**body["spec"], "approver": "bob", "approverGroups": ["engineers"]}
        return {**body, "metadata": {"name": "shop-2-0-0-approval-x7k2p", "namespace": namespace}, "spec": spec}


def test_approve_shows_the_change_creates_the_approval_and_reports_the_tally():
    obj = rollout(phase="AwaitingApproval", stage="Pending", wave=None, authors=["alice"])
    obj["metadata"]["generation"] = 2
    obj["spec"].update(ticket="SHOP-1234", aiAssisted=True)
    after = rollout(**copy.deepcopy(GUARDED_STATUS))
    after["status"]["approvals"][0]["name"] = "shop-2-0-0-approval-x7k2p"
    kube, out, err = FakeKube(obj, after), io.StringIO(), io.StringIO()
    args = parser.parse_args(["approve", "shop-2-0-0", "-n", "shop", "--comment", "LGTM"])
    assert commands.run(kube, args, out, err) == EXIT_OK  # type: ignore[arg-type]
    assert kube.created == [flow.approval_body("shop-2-0-0", 2, "LGTM")]
    assert out.getvalue().splitlines() == [
        'Approving revision 2 of guardedrollout "shop-2-0-0" in namespace "shop":',
        "  Target:         Deployment/shop",
        "  Change:         app: image shop:2.0.0",
        "  Description:    <none>",
        "  Ticket:         SHOP-1234",
        "  Rollback plan:  <none>",
        "  AI-assisted:    yes",
        "  Authors:        alice",
        "  Phase:          AwaitingApproval",
        "rolloutapproval/shop-2-0-0-approval-x7k2p created: approved revision 2 of shop-2-0-0 as bob",
        "Counted:      yes, for revision 2",
        "Approvals:    1/2 counted: bob (engineers)",
        "Gate:         Approvals not passed (AwaitingApproval): waiting for 1/2 approvals of revision 2 "
        "(required by tier-1; authors alice cannot approve)",
    ]
    assert err.getvalue() == ""


def test_approving_a_revision_that_is_no_longer_current_warns_before_the_operator_refuses():
    obj = rollout()
    obj["metadata"]["generation"] = 4
    kube, out, err = FakeKube(obj, obj), io.StringIO(), io.StringIO()
    args = parser.parse_args(["approve", "shop-2-0-0", "--revision", "3", "--wait", "0"])
    commands.run(kube, args, out, err)  # type: ignore[arg-type]
    assert out.getvalue().startswith('Approving revision 3 of guardedrollout "shop-2-0-0"')
    assert err.getvalue() == ("Warning: the rollout is at revision 4, not 3; the operator approves only the current "
                              "revision\n")
    assert kube.created[0]["spec"]["revision"] == 3, "the admission webhook decides, with the revision reviewed"


# -- configuration and consumers -------------------------------------------------------------

SETTINGS = '{\n  "checkout": {"v2": true, "timeoutMs": 2500},\n  "currency": "EUR",\n  "retries": 3\n}'
SECRET_VERSION = "shop-secret-0a1b2c3d4e"


def shared_config(name: str = "shop-config-7f3a", **status: object) -> dict:
    """A shared configuration change of shop, orders and billing, in wave 2 of 4 (the consumers in their 1 of 3)."""
    obj = rollout(name, **status)
    obj["metadata"]["uid"] = f"uid-{name}"
    obj["spec"] = {"target": {"name": "shop"}, "consumers": [{"name": "orders"}, {"name": "billing"}],
                   "change": {"configMaps": [{"name": "shop-config", "removeKeys": ["OLD_FLAG"],
                                              "data": {"settings.json": SETTINGS, "LOG_LEVEL": "debug"}}],
                              "secrets": [{"name": "shop-secret", "contentFrom": SECRET_VERSION}]}}
    obj["status"].setdefault("config", [
        {"kind": "ConfigMap", "name": "shop-config", "version": "shop-config-5e8d41c0b7"},
        {"kind": "Secret", "name": "shop-secret", "version": SECRET_VERSION}])
    obj["status"].setdefault("consumers", [
        {"name": "shop", "rollout": name, "phase": "Progressing", "stage": "Bake", "waveProgress": "2/4",
         "canaryReplicas": 1, "stableReplicas": 10, "message": ""},
        {"name": "orders", "rollout": f"{name}-orders", "phase": "Progressing", "stage": "Bake", "waveProgress": "1/3",
         "canaryReplicas": 1, "stableReplicas": 6,
         "message": "wave 1/3: baking 5m (until 2026-03-01T12:04:10Z); analysis Pass on order-rate and error-rate"},
        {"name": "billing", "rollout": f"{name}-billing", "phase": "Progressing", "stage": "ScaleCanary",
         "waveProgress": "1/3", "canaryReplicas": 0, "stableReplicas": 4,
         "message": "wave 1/3: waiting for 1 canary pods"},
    ])
    return obj


def consumer_rollout(parent: dict, deployment: str, owned: bool = True) -> dict:
    """The rollout a parent made for one consumer: labelled part-of it and (unless told otherwise) owned by it."""
    name = parent["metadata"]["name"]
    obj = rollout(f"{name}-{deployment}", phase="Progressing", stage="Bake", waveProgress="1/3",
                  message="wave 1/3: baking 5m")
    obj["metadata"]["labels"] = {"rollouts.guarded.dev/part-of": name}
    if owned:
        obj["metadata"]["ownerReferences"] = [{"apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
                                               "name": name, "uid": parent["metadata"]["uid"], "controller": True}]
    obj["spec"] = {"target": {"name": deployment}, "change": copy.deepcopy(parent["spec"]["change"])}
    return obj


def section(lines: list[str], head: str) -> list[str]:
    """The lines of one section of the status view: its headline and the indented lines after it."""
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def test_status_view_of_a_shared_config_rollout_shows_its_configuration_and_consumers():
    lines = view.status_view(shared_config()).splitlines()
    assert "Change:       ConfigMap shop-config; Secret shop-secret" in lines
    assert section(lines, "Configuration:") == [
        "Configuration:",
        "  ConfigMap shop-config -> shop-config-5e8d41c0b7",
        "    sets LOG_LEVEL = debug",
        '    sets settings.json = { "checkout": {"v2": true, "timeoutMs": 2500}...',
        "    removes OLD_FLAG",
        f"  Secret shop-secret -> {SECRET_VERSION}   (values are never shown)",
    ]
    assert section(lines, "Consumers:") == [
        "Consumers:    3 Deployments read the change, each judged against its own stable pods; a rollback of one "
        "rolls back all",
        "  DEPLOYMENT   ROLLOUT                    PHASE         STAGE         WAVE   CANARY   STABLE   MESSAGE",
        "  shop         shop-config-7f3a           Progressing   Bake          2/4    1        10",
        "  orders       shop-config-7f3a-orders    Progressing   Bake          1/3    1        6        "
        "wave 1/3: baking 5m (until 2026-03-01T12:04:10Z); analysi...",
        "  billing      shop-config-7f3a-billing   Progressing   ScaleCanary   1/3    0        4        "
        "wave 1/3: waiting for 1 canary pods",
    ]
    assert lines.index("Configuration:") < lines.index("Replicas:     canary 1 (10% of ready pods), stable 10 "
                                                        "(the target's count before the rollout)")
    assert lines.index(section(lines, "Consumers:")[0]) > lines.index(section(lines, "Waves:")[0])


def test_status_view_before_the_operator_made_the_versions_and_the_consumers_rollouts():
    obj = shared_config(config=[], consumers=[])
    obj["spec"]["change"] = {"configMaps": [{"name": "shop-config", "contentFrom": "shop-config-next"}],
                             "secrets": [{"name": "shop-secret", "contentFrom": SECRET_VERSION}]}
    lines = view.status_view(obj).splitlines()
    assert section(lines, "Configuration:") == [
        "Configuration:",
        "  ConfigMap shop-config -> <version not made yet>",
        "    new content: all of ConfigMap shop-config-next",
        "  Secret shop-secret -> <version not made yet>   (values are never shown)",
        f"    new content: all of Secret {SECRET_VERSION}",
    ]
    assert "Consumers:    shop, orders, billing (each moved by a rollout of its own once this one starts)" in lines


def test_a_config_map_with_many_keys_lists_some_and_counts_the_rest():
    obj = shared_config()
    obj["spec"]["change"]["configMaps"][0]["data"] = {f"key{i:02}": "x" * 100 for i in range(15)}
    lines = section(view.status_view(obj).splitlines(), "Configuration:")
    assert lines[2] == "    sets key00 = " + "x" * 45 + "..."
    assert lines[13:15] == ["    sets key11 = " + "x" * 45 + "...", "    sets 3 more keys"]


def test_status_view_of_an_image_change_has_no_configuration_or_consumers():
    lines = view.status_view(rollout()).splitlines()
    assert not any(line.startswith(("Configuration:", "Consumers:", "Part of:")) for line in lines)


def test_status_view_of_a_consumers_rollout_names_the_rollout_it_is_part_of():
    child = consumer_rollout(shared_config(), "orders")
    lines = view.status_view(child).splitlines()
    assert lines[2:4] == ["Target:       Deployment/orders",
                          "Part of:      guardedrollout/shop-config-7f3a (its gates and waves lead this one)"]
    assert "  ConfigMap shop-config -> <version not made yet>" in lines


def test_list_indents_the_consumers_rollouts_under_their_parent_and_names_a_config_change():
    parent = shared_config()
    faked = consumer_rollout(parent, "zz", owned=False)  # labelled, not owned: the operator refuses it
    items = [rollout("a-release"), consumer_rollout(parent, "orders"), faked, parent,
             consumer_rollout(parent, "billing")]
    lines = tables.list_table(items, NOW).splitlines()
    assert lines == [
        "NAME                         TARGET    PHASE         WAVE   CANARY   AGE   CHANGE                            "
        "          MESSAGE",
        "a-release                    shop      Progressing   2/4    10%      3m    app: image shop:2.0.0             "
        "          wave 2/4: baking 60s (until 12:01:00Z)",
        "shop-config-7f3a             shop      Progressing   2/4    10%      3m    ConfigMap shop-config; Secret shop"
        "-secret   wave 2/4: baking 60s (until 12:01:00Z)",
        "  shop-config-7f3a-billing   billing   Progressing   1/3    10%      3m    ConfigMap shop-config; Secret shop"
        "-secret   wave 1/3: baking 5m",
        "  shop-config-7f3a-orders    orders    Progressing   1/3    10%      3m    ConfigMap shop-config; Secret shop"
        "-secret   wave 1/3: baking 5m",
        "shop-config-7f3a-zz          zz        Progressing   1/3    10%      3m    ConfigMap shop-config; Secret shop"
        "-secret   wave 1/3: baking 5m",
    ]
    across = tables.list_table(items, NOW, all_namespaces=True).splitlines()
    assert [line[:40].rstrip() for line in across[2:5]] == [
        "shop        shop-config-7f3a",
        "shop          shop-config-7f3a-billing",
        "shop          shop-config-7f3a-orders",
    ], "the NAME column is indented after NAMESPACE"


class SecretKube:
    """What status, list and audit read, and a Secret holding a marker value that must never be shown."""

    def __init__(self, rollouts: list[dict], secrets: dict[str, dict]) -> None:
        self.rollouts, self.secrets = rollouts, secrets
        self.secret_reads: list[str] = []

    def namespace(self, explicit: str | None) -> str:
        return explicit or "shop"

    def get(self, namespace: str, name: str) -> dict:
        return next(r for r in self.rollouts if r["metadata"]["name"] == name)

    def list(self, namespace: str | None) -> list[dict]:
        return self.rollouts

    def list_approvals(self, namespace: str | None) -> list[dict]:
        return []

    def get_secret(self, namespace: str, name: str) -> tuple[dict | None, str]:
        self.secret_reads.append(name)
        return self.secrets.get(name), ""


def test_a_secret_change_shows_names_only_through_status_list_and_audit():
    marker = "MARKER-s3cr3t-7e1f"
    encoded = base64.b64encode(marker.encode()).decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"token": encoded},
              "metadata": {"name": SECRET_VERSION, "namespace": "shop"}}
    parent = shared_config()
    # A stray field beside the names (the API server prunes it; were it there, nothing shows it).
    parent["spec"]["change"]["secrets"][0]["stringData"] = {"token": marker}
    kube = SecretKube([parent, consumer_rollout(parent, "orders")],
                      {SECRET_VERSION: secret, "shop-secret": {**secret, "metadata": {"name": "shop-secret"}}})
    outputs = {}
    for argv in (["status", "shop-config-7f3a"], ["status", "shop-config-7f3a-orders"], ["list"], ["list", "-A"],
                 ["audit"], ["audit", "-o", "json"], ["audit", "-o", "yaml"]):
        out, err = io.StringIO(), io.StringIO()
        assert commands.run(kube, parser.parse_args(argv), out, err) == EXIT_OK  # type: ignore[arg-type]
        outputs[" ".join(argv)] = out.getvalue() + err.getvalue()
    for command, text in outputs.items():
        assert marker not in text and encoded not in text and "token" not in text, command
    assert kube.secret_reads == [], "showing a rollout never reads a Secret"
    assert f"  Secret shop-secret -> {SECRET_VERSION}   (values are never shown)" in outputs["status shop-config-7f3a"]
    assert "ConfigMap shop-config; Secret shop-secret" in outputs["list"]
    assert f"| Secret | shop-secret | {SECRET_VERSION} | all of Secret {SECRET_VERSION} |" in outputs["audit"]
    report = json.loads(outputs["audit -o json"])
    assert report["rollouts"][0]["change"]["secrets"] == [{"name": "shop-secret", "contentFrom": SECRET_VERSION}]
    assert {"kind": "Secret", "name": "shop-secret", "version": SECRET_VERSION, "contentFrom": SECRET_VERSION,
            "keys": [], "removedKeys": []} in report["rollouts"][0]["config"]


def test_a_consumers_rollout_is_found_by_its_owner_when_the_label_holds_a_shortened_name():
    parent = shared_config("shop-config-" + "x" * 60)
    child = consumer_rollout(parent, "orders")
    child["metadata"]["labels"] = {"rollouts.guarded.dev/part-of": "shop-config-" + "x" * 40 + "-0123456789"}
    lines = tables.list_table([child, parent, rollout("a-release")], NOW).splitlines()
    parent_name, child_name = parent["metadata"]["name"], child["metadata"]["name"]
    assert [line.split()[0] for line in lines[1:]] == ["a-release", parent_name, child_name]
    assert lines[3].startswith("  " + child_name)
    assert (f"Part of:      guardedrollout/{parent_name} (its gates and waves lead this one)"
            in view.status_view(child).splitlines())


def test_evidence_of_a_superseded_judgement_shows_its_trajectory_and_dashes_for_what_it_no_longer_keeps() -> None:
    full = {"judge": "Stable", "verdict": "Pass", "canaryEvents": 44, "canaryRequests": 890, "canaryRatio": 0.0494,
            "referenceRatio": 0.0427, "thresholdRho": 0.8, "logLr": -2.93, "logThreshold": 5.99,
            "reason": "not degraded"}
    summarized = {"judge": "Stable", "verdict": "Inconclusive", "canaryRatio": 0.051, "referenceRatio": 0.0498,
                  "logLr": -2.54, "reason": ""}
    assert view.evidence_rows([full, summarized]) == [
        ["Stable", "Pass", "44/890", "0.0494", "0.0427", "0.8", "-2.93 / 5.99", "not degraded"],
        ["Stable", "Inconclusive", "-", "0.051", "0.0498", "-", "-2.54 / -", ""],
    ]
