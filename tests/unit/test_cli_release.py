"""`kubectl guarded release` and the emergency marks of the plugin, on plain dicts and a fake API: the flags
become a manifest, the waves come from the flags or the guarding policies, and what the release waits for is
read off the status the operator writes."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_time import FakeTime

from guarded.cli import audit, commands, flow, parser, release, tables, view
from guarded.cli.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CliError
from guarded.cli.release import Defaults, ReleaseError
from guarded.core.config_refs import content_digest, version_name

NS = "shop"
IMAGE = "registry.example/shop:2.2.0"


def deployment(*containers: str, labels: dict | None = None, replicas: int = 10) -> dict:
    return {"metadata": {"name": "shop", "namespace": NS, "labels": labels or {"app": "shop", "tier": "1"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": c, "image": "registry.example/shop:2.1.0"} for c in containers or ("app",)]}}}}


def policy_item(name: str, *, guard: bool = True, defaults: dict | None = None, ns_selector: dict | None = None,
                target_selector: dict | None = None) -> dict:
    spec: dict[str, Any] = {"selector": {"targetSelector": target_selector or {"matchLabels": {"tier": "1"}}},
                            "guardWorkloads": guard}
    if ns_selector is not None:
        spec["selector"]["namespaceSelector"] = ns_selector
    if defaults is not None:
        spec["releaseDefaults"] = defaults
    return {"metadata": {"name": name}, "spec": spec}


TIER1_WAVES = [{"replicas": 1, "bake": "2m"}, {"weight": 50, "bake": "5m"}, {"weight": 100, "bake": "2m"}]
TIER1 = policy_item("tier1", defaults={"waves": TIER1_WAVES, "analysis": {"requests": "http_requests_total"}})


# -- flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "wave"), [
    ("1", {"replicas": 1}),
    ("3:2m", {"replicas": 3, "bake": "2m"}),
    ("10%", {"weight": 10}),
    ("50%:10m:gate", {"weight": 50, "bake": "10m", "manualGate": True}),
    ("100%:gate", {"weight": 100, "manualGate": True}),
])
def test_a_wave_flag_is_a_size_an_optional_bake_and_an_optional_gate(text: str, wave: dict) -> None:
    assert release.parse_wave(text) == wave


@pytest.mark.parametrize("text", ["", "half", "10%%", "1:2m:3m", "-1"])
def test_a_wave_flag_that_is_not_one_names_the_form(text: str) -> None:
    with pytest.raises(ReleaseError, match="SIZE"):
        release.parse_wave(text)


def test_images_and_env_name_their_containers_or_the_only_one() -> None:
    assert release.parse_images(["app=reg/shop:2", "sidecar=reg/proxy:1"]) == {"app": "reg/shop:2",
                                                                                "sidecar": "reg/proxy:1"}
    assert release.parse_envs(["app:A=1", "B=x=y", "C=a:b"], "app") == {
        "app": [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}, {"name": "C", "value": "a:b"}]}
    with pytest.raises(ReleaseError, match="CONTAINER=IMAGE"):
        release.parse_images(["reg/shop:2"])
    with pytest.raises(ReleaseError, match="several containers"):
        release.parse_envs(["A=1"], None)
    with pytest.raises(ReleaseError, match="no container 'web'"):
        release.change_of({"web": "x:1"}, {}, ["app"])
    with pytest.raises(ReleaseError, match="nothing to release"):
        release.change_of({}, {}, ["app"])
    change = release.change_of({"app": IMAGE}, {"app": [{"name": "A", "value": "1"}], "side": []}, ["app", "side"])
    assert change == {"containers": [{"name": "app", "image": IMAGE, "env": [{"name": "A", "value": "1"}]},
                                     {"name": "side"}]}


def manifest(**kwargs: Any) -> dict:
    base: dict[str, Any] = {"namespace": NS, "target": "shop", "change": {"containers": [{"name": "app",
                                                                                         "image": IMAGE}]},
                            "waves": None, "defaults": Defaults()}
    return release.release_manifest(**{**base, **kwargs})


def test_the_flags_become_a_guarded_rollout_named_by_its_spec_and_naming_nobody() -> None:
    body = manifest(description="New checkout", ticket="SHOP-9", rollback_plan="abort", ai_assisted=True,
                    emergency=True, waves=[{"replicas": 1, "bake": "30s"}, {"weight": 100}])
    assert body["spec"] == {
        "target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": IMAGE}]},
        "waves": [{"replicas": 1, "bake": "30s"}, {"weight": 100}], "description": "New checkout",
        "ticket": "SHOP-9", "rollbackPlan": "abort", "aiAssisted": True, "emergency": True}
    name = body["metadata"]["name"]
    assert name.startswith("shop-") and len(name) == len("shop-") + 10
    assert manifest(description="New checkout", ticket="SHOP-9", rollback_plan="abort", ai_assisted=True,
                    emergency=True, waves=[{"replicas": 1, "bake": "30s"}, {"weight": 100}]) == body, "stable"
    assert manifest()["metadata"]["name"] != name and manifest(emergency=True)["metadata"]["name"] != \
        manifest()["metadata"]["name"]
    assert "authors" not in json.dumps(body), "admission stamps the author, the plugin never names one"
    assert manifest(name="hotfix")["metadata"]["name"] == "hotfix"


def test_policy_defaults_give_waves_and_analysis_and_explicit_waves_win() -> None:
    defaults = release.release_defaults([TIER1], {}, {"tier": "1"})
    assert defaults.source == "releaseDefaults of RolloutPolicy tier1"
    body = manifest(defaults=defaults)
    assert body["spec"]["waves"] == TIER1_WAVES and body["spec"]["analysis"] == {"requests": "http_requests_total"}
    own = manifest(defaults=defaults, waves=[{"replicas": 1}, {"weight": 100}])
    assert own["spec"]["waves"] == [{"replicas": 1}, {"weight": 100}] and own["spec"]["analysis"]


def test_a_bad_spec_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ReleaseError, match="waves"):
        manifest(waves=[{"weight": 50}, {"weight": 10}])


@pytest.mark.parametrize(("policies", "ns_labels", "labels", "source"), [
    ([TIER1], {}, {"tier": "1"}, "releaseDefaults of RolloutPolicy tier1"),
    ([TIER1], {}, {"tier": "2"}, "the GuardedRollout default"),                      # not selected
    ([policy_item("p", guard=False, defaults={"waves": TIER1_WAVES})], {}, {"tier": "1"},
     "the GuardedRollout default"),                                                  # selects but does not guard
    ([TIER1, policy_item("a-first", defaults={"waves": [{"weight": 100}]})], {}, {"tier": "1"},
     "releaseDefaults of RolloutPolicy a-first, tier1"),                             # by name, field by field
    ([policy_item("ns", defaults={"waves": TIER1_WAVES}, ns_selector={"matchLabels": {"env": "prod"}})], None,
     {"tier": "1"}, "the GuardedRollout default"),                                   # namespace not readable
    (None, {}, {"tier": "1"}, "the GuardedRollout default (RolloutPolicies not readable: forbidden)"),
])
def test_the_waves_come_from_the_policies_that_guard_the_target_when_they_can_be_read(
        policies: list | None, ns_labels: dict | None, labels: dict, source: str) -> None:
    assert release.release_defaults(policies, ns_labels, labels, "forbidden").source == source


def test_parsing_the_release_command() -> None:
    args = parser.parse_args(["release", "shop", "--image", f"app={IMAGE}", "--env", "app:K=V", "--wave", "1:2m",
                              "--wave", "100%", "--ticket", "T-1", "--emergency", "--watch", "--timeout", "60",
                              "-n", NS])
    assert (args.command, args.target, args.image, args.env, args.wave, args.ticket, args.emergency, args.watch,
            args.timeout, args.namespace, args.wait, args.dry_run) == (
        "release", "shop", [f"app={IMAGE}"], ["app:K=V"], ["1:2m", "100%"], "T-1", True, True, 60.0, NS, 15.0, None)
    assert parser.parse_args(["release", "shop", "--image", "a=b:1", "--dry-run"]).dry_run == "client"
    assert parser.parse_args(["release", "shop", "--dry-run=server", "-o", "json"]).output == "json"


@pytest.mark.parametrize("argv", [["release"], ["release", "shop", "-o", "yaml"], ["release", "shop", "--timeout", "5"],
                                  ["release", "shop", "--dry-run=maybe"], ["release", "shop", "--wait", "-1"]])
def test_release_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == EXIT_USAGE


# -- what it says --------------------------------------------------------------------------

def created(emergency: bool = False, status: dict | None = None, **fields: Any) -> dict:
    body = manifest(defaults=release.release_defaults([TIER1], {}, {"tier": "1"}), ticket="SHOP-9",
                    emergency=emergency)
    body["metadata"].update(generation=1, uid="u-1",
                            annotations={**body["metadata"]["annotations"],
                                         "rollouts.guarded.dev/authors": '["alice"]'})
    if status or fields:
        body["status"] = {"observedGeneration": 1, **(status or {}), **fields}
    return body


def test_what_was_created_names_target_change_waves_and_where_they_came_from() -> None:
    lines = release.created_lines(created(emergency=True), waves_source="releaseDefaults of RolloutPolicy tier1",
                                  replicas=10)
    name = created()["metadata"]["name"]
    assert lines[0] == f'guardedrollout/{created(emergency=True)["metadata"]["name"]} created in namespace "shop"'
    assert lines[1:] == [
        "  Target:         Deployment/shop",
        f"  Change:         app: image {IMAGE}",
        "  Waves:          1 pod (bake 2m), 50% (5 pods, bake 5m), 100% (10 pods, bake 2m)  "
        "[releaseDefaults of RolloutPolicy tier1]",
        "  Ticket:         SHOP-9",
        "  Emergency:      yes (break glass)",
        "  Authors:        alice",
    ]
    assert name != created(emergency=True)["metadata"]["name"]


AWAITING = {
    "phase": "AwaitingApproval", "stage": "Pending", "emergency": True,
    "gates": [{"gate": "Validation", "passed": True, "reason": "Passed"},
              {"gate": "Approvals", "passed": False, "reason": "AwaitingApproval",
               "message": "waiting for 0/2 approvals of revision 1 (required by tier1; authors alice cannot approve)"}],
    "policy": {"policies": ["tier1"], "rules": [{"rule": "requiredApprovals", "value": "2", "setBy": ["tier1"]},
                                               {"rule": "emergencyBake", "value": "2s", "setBy": ["tier1"]}]},
}


def test_an_emergency_release_waits_for_approvals_by_someone_other_than_its_author() -> None:
    obj = created(emergency=True, status=AWAITING)
    name = obj["metadata"]["name"]
    assert release.waiting_lines(obj, waited=15) == [
        "Phase:          AwaitingApproval",
        "Emergency:      yes (break glass): every wave bakes at most 2s (emergencyBake, set by tier1); needs at "
        "least one approval by someone other than its authors",
        "Waiting for:    0/2 approvals of revision 1 (required by tier1; authors alice cannot approve)",
        f"Approve:        someone other than alice: kubectl guarded approve {name} -n shop",
        f"Follow it: kubectl guarded watch {name} -n shop",
    ]


def test_a_blocked_release_names_its_gates_and_a_clear_one_is_starting() -> None:
    blocked = created(phase="Blocked", gates=[
        {"gate": "Documentation", "passed": False, "reason": "DocumentationMissing",
         "message": "spec.rollbackPlan is required by tier1"},
        {"gate": "Approvals", "passed": False, "reason": "AwaitingApproval", "message": "waiting for 0/1 approvals"}])
    lines = release.waiting_lines(blocked, waited=15)
    assert lines[:2] == ["Phase:          Blocked",
                         "Blocked by:     Documentation: spec.rollbackPlan is required by tier1"]
    starting = created(phase="Progressing", stage="ScaleCanary", message="wave 1/3: waiting for 1 canary pods",
                       gates=[{"gate": "Approvals", "passed": True, "reason": "NotRequired"}])
    assert release.waiting_lines(starting, waited=15)[1] == "Starting:       wave 1/3: waiting for 1 canary pods"
    unjudged = created()
    assert "the operator to judge the gates (not within 15s; is it running?)" in \
        release.waiting_lines(unjudged, waited=15)[1]


def test_waiting_for_the_gates_stops_once_this_revision_is_judged() -> None:
    t = FakeTime()
    seq = [created(), created(phase="Pending", observedGeneration=0), created(status=AWAITING)]

    def read() -> dict:
        return seq.pop(0) if len(seq) > 1 else seq[0]
    assert flow.await_gates(read, 15, clock=t.clock, sleep=t.sleep)["status"]["phase"] == "AwaitingApproval"
    assert t.sleeps == [0.5, 0.5]
    t2 = FakeTime()
    assert "status" not in flow.await_gates(created, 2, clock=t2.clock, sleep=t2.sleep) and t2.now == 2




class FakeKube:
    """The calls `release` makes: the target, the policies (maybe forbidden), create, then reads."""

    def __init__(self, target: dict, policies: list | None, status: dict, exists: bool = False,
                 secrets: dict[str, dict] | None = None) -> None:
        self.target, self.policies, self.status, self.exists = target, policies, status, exists
        self.created: list[tuple[dict, bool]] = []
        self.secrets = secrets or {}                      # the namespace's Secrets, by name
        self.secrets_forbidden = False                    # RBAC: the user may not get Secrets
        self.created_secrets: list[tuple[dict, bool]] = []

    def get_secret(self, namespace: str, name: str) -> tuple[dict | None, str]:
        if self.secrets_forbidden:
            return None, f'secrets "{name}" is forbidden: User "alice" cannot get resource "secrets" in API group ""'
        return copy.deepcopy(self.secrets.get(name)), ""

    def create_secret(self, namespace: str, body: dict, dry_run: bool = False) -> None:
        self.created_secrets.append((copy.deepcopy(body), dry_run))

    def namespace(self, explicit: str | None) -> str:
        return explicit or "default"

    def get_deployment(self, namespace: str, name: str) -> dict:
        return self.target

    def policies_if_readable(self) -> tuple[list | None, str]:
        return (self.policies, "") if self.policies is not None else (None, "forbidden")

    def namespace_labels_if_readable(self, namespace: str) -> dict:
        return {}

    def create_rollout(self, namespace: str, body: dict, dry_run: bool = False) -> dict:
        if self.exists:
            raise CliError(f'Error from server (Conflict): guardedrollouts "{body["metadata"]["name"]}" already exists')
        self.created.append((body, dry_run))
        obj = copy.deepcopy(body)
        obj["metadata"].update(generation=1, annotations={**obj["metadata"]["annotations"],
                                                          "rollouts.guarded.dev/authors": '["alice"]'})
        return obj

    def get(self, namespace: str, name: str) -> dict:
        obj = copy.deepcopy(self.created[-1][0])
        obj["metadata"].update(generation=1, annotations={"rollouts.guarded.dev/authors": '["alice"]'})
        obj["status"] = {"observedGeneration": 1, **self.status}
        return obj


def run(kube: FakeKube, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = commands.run(kube, parser.parse_args(["release", *argv]), out, err)  # type: ignore[arg-type]
    except CliError as exc:
        return exc.code, out.getvalue(), exc.message
    return code, out.getvalue(), err.getvalue()


def test_release_creates_the_rollout_and_says_what_it_waits_for() -> None:
    kube = FakeKube(deployment(), [TIER1], AWAITING)
    code, out, err = run(kube, "shop", "--image", f"app={IMAGE}", "--ticket", "SHOP-9", "--emergency", "-n", NS)
    assert (code, err) == (EXIT_OK, "")
    [(body, dry)] = kube.created
    assert not dry and body["spec"]["waves"] == TIER1_WAVES and body["spec"]["emergency"] is True
    lines = out.splitlines()
    assert lines[0] == f'guardedrollout/{body["metadata"]["name"]} created in namespace "shop"'
    assert "Waiting for:    0/2 approvals of revision 1 (required by tier1; authors alice cannot approve)" in lines


def test_release_without_readable_policies_takes_the_default_waves_and_says_why() -> None:
    kube = FakeKube(deployment(), None, AWAITING)
    code, out, _ = run(kube, "shop", "--image", f"app={IMAGE}", "--wait", "0")
    assert code == EXIT_OK and "waves" not in kube.created[0][0]["spec"]
    assert "[the GuardedRollout default (RolloutPolicies not readable: forbidden)]" in out


def test_a_client_dry_run_prints_the_manifest_and_creates_nothing() -> None:
    kube = FakeKube(deployment("app", "proxy"), [TIER1], AWAITING)
    code, out, _ = run(kube, "shop", "--image", f"app={IMAGE}", "--env", "LOG=debug", "--dry-run")
    assert code == EXIT_OK and kube.created == []
    body = yaml.safe_load(out)
    assert body["kind"] == "GuardedRollout" and body["spec"]["change"]["containers"] == [
        {"name": "app", "image": IMAGE, "env": [{"name": "LOG", "value": "debug"}]}]


def test_usage_mistakes_found_with_the_target_exit_2_and_a_repeated_release_says_where_it_is() -> None:
    kube = FakeKube(deployment(), [TIER1], AWAITING)
    code, _, err = run(kube, "shop", "--image", f"web={IMAGE}")
    assert code == EXIT_USAGE and "no container 'web' (its containers: app)" in err
    assert run(kube, "shop", "--image", f"app={IMAGE}", "--wave", "half")[0] == EXIT_USAGE
    kube.exists = True
    code, _, err = run(kube, "shop", "--image", f"app={IMAGE}")
    assert code == EXIT_ERROR and "already exists" in err and "kubectl guarded status shop-" in err


# -- configuration: --config and --secret --------------------------------------------------------

TOKEN = "s3cr3t-t0ken-value"                              # must never be printed nor put in the GuardedRollout


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def shop_secret(**data: str) -> dict:
    return {"metadata": {"name": "shop-secret", "namespace": NS}, "type": "example.com/api-credentials",
            "data": {k: b64(v) for k, v in data.items()}}


def test_the_config_flags_are_grouped_by_the_config_or_secret_before_them() -> None:
    args = parser.parse_args(["release", "shop", "--config", "a", "--from-file", "x.json", "--from-literal", "K=V",
                              "--image", f"app={IMAGE}", "--secret", "s", "--from-literal", "t=1", "--config", "b",
                              "--remove-key", "old", "--from-file=k=y.txt"])
    assert [(g.kind, g.name, g.sources, g.remove) for g in args.config] == [
        ("ConfigMap", "a", [("--from-file", "x.json"), ("--from-literal", "K=V")], []),
        ("Secret", "s", [("--from-literal", "t=1")], []),
        ("ConfigMap", "b", [("--from-file", "k=y.txt")], ["old"])]
    assert parser.parse_args(["release", "shop", "--image", f"app={IMAGE}"]).config is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--from-file", "x.json", "--config", "c"], "argument --from-file: give --config NAME or --secret NAME before"),
    (["--from-literal", "a=b"], "argument --from-literal: give --config NAME or --secret NAME before"),
    (["--remove-key", "a"], "argument --remove-key: give --config NAME or --secret NAME before"),
    (["--config", "c"], "--config c: give --from-file, --from-literal or --remove-key after it"),
])
def test_a_config_flag_out_of_place_is_a_usage_error_naming_it(argv: list[str], message: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["release", "shop", *argv])
    assert exc.value.code == EXIT_USAGE and message in capsys.readouterr().err


def test_a_config_map_release_sets_keys_from_files_and_literals(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text('{"checkout": "v2"}\n')
    (tmp_path / "other.yaml").write_text("a: 1\n")
    kube = FakeKube(deployment(), [TIER1], AWAITING)
    code, out, err = run(kube, "shop", "-n", NS, "--wait", "0", "--config", "shop-config",
                         "--from-file", str(tmp_path / "settings.json"), "--from-literal", "LOG_LEVEL=debug=1",
                         "--from-file", f"flags.yaml={tmp_path / 'other.yaml'}")
    assert (code, err) == (EXIT_OK, "")
    [(body, _)] = kube.created
    assert body["spec"]["change"] == {"configMaps": [{"name": "shop-config", "data": {
        "settings.json": '{"checkout": "v2"}\n', "LOG_LEVEL": "debug=1", "flags.yaml": "a: 1\n"}}]}
    assert out.splitlines()[1:3] == ["  Target:         Deployment/shop",
                                     "  ConfigMap:      shop-config: sets settings.json, LOG_LEVEL, flags.yaml"]
    assert kube.created_secrets == []


def test_two_config_groups_with_an_image_and_a_removed_key(tmp_path: Path) -> None:
    (tmp_path / "limits.json").write_text("{}")
    kube = FakeKube(deployment(), [TIER1], AWAITING)
    code, out, _ = run(kube, "shop", "--wait", "0", "--config", "shop-config", "--from-literal", "A=1",
                       "--remove-key", "legacy.ini", "--image", f"app={IMAGE}",
                       "--config", "limits", "--from-file", str(tmp_path / "limits.json"))
    assert code == EXIT_OK
    change = kube.created[0][0]["spec"]["change"]
    assert change == {"containers": [{"name": "app", "image": IMAGE}], "configMaps": [
        {"name": "shop-config", "data": {"A": "1"}, "removeKeys": ["legacy.ini"]},
        {"name": "limits", "data": {"limits.json": "{}"}}]}
    assert out.splitlines()[2:5] == [f"  Change:         app: image {IMAGE}",
                                     "  ConfigMap:      shop-config: sets A; removes legacy.ini",
                                     "  ConfigMap:      limits: sets limits.json"]
    run(kube, "shop", "--wait", "0", "--config", "shop-config", "--remove-key", "legacy.ini")
    assert kube.created[-1][0]["spec"]["change"] == {
        "configMaps": [{"name": "shop-config", "data": {}, "removeKeys": ["legacy.ini"]}]}


@pytest.mark.parametrize(("flags", "message"), [
    (["--from-file", "/nonexistent/settings.json"], "--from-file '/nonexistent/settings.json': cannot read "
                                                    "/nonexistent/settings.json: No such file or directory"),
    (["--from-literal", "LOG_LEVEL"], "--from-literal 'LOG_LEVEL': write KEY=VALUE"),
    (["--from-literal", "=x"], "--from-literal '=x': write KEY=VALUE"),
    (["--from-literal", "bad key=x"], "--from-literal 'bad key=x': 'bad key' is not a valid key"),
    (["--from-file", "=settings.json"], "--from-file '=settings.json': write PATH or KEY=PATH"),
    (["--remove-key", "a/b"], "--remove-key 'a/b': 'a/b' is not a valid key"),
    (["--from-literal", "A=1", "--from-literal", "A=2"], "--config shop-config: key 'A' is given twice"),
    (["--from-literal", "A=1", "--remove-key", "A"], "--config shop-config: key 'A' is both set and removed"),
    (["--from-literal", "A=1", "--config", "shop-config", "--from-literal", "B=2"], "--config shop-config is given "
                                                                                   "twice"),
])
def test_config_mistakes_exit_2_naming_the_flag(flags: list[str], message: str) -> None:
    kube = FakeKube(deployment(), [TIER1], AWAITING)
    code, _, err = run(kube, "shop", "--config", "shop-config", *flags)
    assert code == EXIT_USAGE and err.startswith("Error: ") and message in err, err
    assert kube.created == []


def test_a_config_map_from_a_directory_or_binary_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00")
    kube = FakeKube(deployment(), [TIER1], AWAITING)
    code, _, err = run(kube, "shop", "--config", "c", "--from-file", str(tmp_path / "blob.bin"))
    assert code == EXIT_USAGE and "not UTF-8 text; a ConfigMap's data holds text" in err
    code, _, err = run(kube, "shop", "--config", "c", "--from-file", f"k={tmp_path}")
    assert code == EXIT_USAGE and f"--from-file 'k={tmp_path}': cannot read {tmp_path}: Is a directory" in err


def test_a_secret_release_makes_a_content_addressed_immutable_version_and_the_rollout_only_names_it(
        tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    kube = FakeKube(deployment(), [TIER1], AWAITING, secrets={"shop-secret": shop_secret(url="https://api", old="x")})
    code, out, err = run(kube, "shop", "-n", NS, "--wait", "0", "--secret", "shop-secret",
                         "--from-literal", f"token={TOKEN}", "--from-file", str(tmp_path / "ca.pem"),
                         "--remove-key", "old")
    assert (code, err) == (EXIT_OK, "")
    data = {"url": b64("https://api"), "token": b64(TOKEN), "ca.pem": b64("-----BEGIN CERTIFICATE-----\n")}
    version = version_name("shop-secret", content_digest(data, None))
    labels = {"rollouts.guarded.dev/config-of": "shop-secret", "app.kubernetes.io/managed-by": "guarded-rollouts"}
    assert kube.created_secrets == [({
        "apiVersion": "v1", "kind": "Secret", "type": "example.com/api-credentials", "immutable": True, "data": data,
        "metadata": {"name": version, "namespace": NS, "labels": labels}}, False)]
    [(body, _)] = kube.created
    assert body["spec"]["change"] == {"secrets": [{"name": "shop-secret", "contentFrom": version}]}
    lines = out.splitlines()
    assert lines[0] == f"secret/{version} (immutable, sets token, ca.pem; removes old) created"
    assert lines[3] == f"  Secret:         shop-secret: sets token, ca.pem; removes old; reads {version}"
    for text in (out, err, json.dumps(body)):
        assert TOKEN not in text and b64(TOKEN) not in text and b64("https://api") not in text


def test_a_secret_value_appears_in_no_output_of_a_dry_run() -> None:
    kube = FakeKube(deployment(), [TIER1], AWAITING, secrets={"shop-secret": shop_secret(url="https://api")})
    for output in ("yaml", "json"):
        code, out, err = run(kube, "shop", "--secret", "shop-secret", "--from-literal", f"token={TOKEN}",
                             "--dry-run", "-o", output)
        assert code == EXIT_OK and kube.created == [] and kube.created_secrets == []
        body = yaml.safe_load(out)
        version = body["spec"]["change"]["secrets"][0]["contentFrom"]
        assert body["spec"]["change"] == {"secrets": [{"name": "shop-secret", "contentFrom": version}]}
        assert err == f"secret/{version} (immutable, sets token) created (client dry run)\n"
        assert TOKEN not in out + err and b64(TOKEN) not in out + err
    code, out, err = run(kube, "shop", "--secret", "shop-secret", "--from-literal", f"token={TOKEN}",
                         "--dry-run=server")
    assert code == EXIT_OK and [dry for _, dry in kube.created_secrets] == [True] and kube.created[0][1] is True
    assert "(immutable, sets token) created (server dry run)" in out and TOKEN not in out + err


def test_an_identical_existing_version_is_reused() -> None:
    data = {"url": b64("https://api"), "token": b64(TOKEN)}
    version = version_name("shop-secret", content_digest(data, None))
    existing = {"metadata": {"name": version, "labels": {"rollouts.guarded.dev/config-of": "shop-secret"}},
                "type": "example.com/api-credentials", "immutable": True, "data": data}
    kube = FakeKube(deployment(), [TIER1], AWAITING,
                    secrets={"shop-secret": shop_secret(url="https://api"), version: existing})
    code, out, _ = run(kube, "shop", "--wait", "0", "--secret", "shop-secret", "--from-literal", f"token={TOKEN}")
    assert code == EXIT_OK and kube.created_secrets == []
    assert kube.created[0][0]["spec"]["change"]["secrets"] == [{"name": "shop-secret", "contentFrom": version}]
    assert out.splitlines()[0] == (f"secret/{version} (immutable, sets token) unchanged: an identical version of "
                                   "shop-secret exists")


@pytest.mark.parametrize(("labels", "data", "message"), [
    ({}, None, "and is not a version of 'shop-secret' (it lacks the label "
               "rollouts.guarded.dev/config-of=shop-secret)"),
    ({"rollouts.guarded.dev/config-of": "shop-secret"}, {"token": b64("other")}, "with other data than the new "
                                                                                   "content"),
])
def test_an_existing_object_by_the_versions_name_with_other_content_is_an_error_naming_it(
        labels: dict, data: dict | None, message: str) -> None:
    content = {"url": b64("https://api"), "token": b64(TOKEN)}
    version = version_name("shop-secret", content_digest(content, None))
    kube = FakeKube(deployment(), [TIER1], AWAITING, secrets={
        "shop-secret": shop_secret(url="https://api"),
        version: {"metadata": {"name": version, "labels": labels}, "data": data or content}})
    code, out, err = run(kube, "shop", "--secret", "shop-secret", "--from-literal", f"token={TOKEN}")
    assert code == EXIT_ERROR and kube.created_secrets == [] and kube.created == []
    assert err.startswith(f'Error: --secret shop-secret: Secret "{version}" exists in namespace "default" {message}')
    assert TOKEN not in out + err


def test_a_secret_the_user_may_not_read_or_that_is_missing_is_an_error_saying_so() -> None:
    kube = FakeKube(deployment(), [TIER1], AWAITING, secrets={"shop-secret": shop_secret(url="https://api")})
    kube.secrets_forbidden = True
    code, _, err = run(kube, "shop", "--secret", "shop-secret", "--from-literal", "token=x", "-n", NS)
    assert code == EXIT_ERROR and kube.created == []
    assert err.startswith('Error: --secret: you may not read Secret "shop-secret" in namespace "shop" (secrets '
                          '"shop-secret" is forbidden: User "alice" cannot get resource "secrets"')
    assert 'needs get and create on Secrets in namespace "shop"' in err
    code, _, err = run(FakeKube(deployment(), [TIER1], AWAITING), "shop", "--secret", "shop-secret",
                       "--from-literal", "token=x")
    assert code == EXIT_ERROR and 'Secret "shop-secret" not found in namespace "default"' in err
    kube = FakeKube(deployment(), [TIER1], AWAITING, secrets={"shop-secret": shop_secret(url="https://api")})
    code, _, err = run(kube, "shop", "--secret", "shop-secret", "--remove-key", "nope")
    assert code == EXIT_USAGE and "--remove-key nope: Secret 'shop-secret' has no such key (its keys: url)" in err


# -- the emergency marks in list, status and audit ----------------------------------------------

def with_status(emergency: bool, **status: Any) -> dict:
    obj = created(emergency=emergency)
    obj["metadata"]["creationTimestamp"] = "2026-03-01T11:00:00Z"
    obj["status"] = {"phase": "Progressing", "emergency": emergency, **status}
    return obj


def test_the_list_shows_an_emergency_column_only_when_one_is_listed() -> None:
    from datetime import UTC, datetime
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    plain = tables.list_table([with_status(False)], now).splitlines()
    assert plain[0].split() == ["NAME", "TARGET", "PHASE", "WAVE", "CANARY", "AGE", "MESSAGE"]
    both = [with_status(False), with_status(True)]
    both[1]["metadata"]["name"] = "zz-hotfix"
    lines = tables.list_table(both, now).splitlines()
    assert lines[0].split() == ["NAME", "TARGET", "PHASE", "EMERGENCY", "WAVE", "CANARY", "AGE", "MESSAGE"]
    assert [line.split()[3] for line in lines[1:]] == ["no", "yes"]


def test_the_status_view_marks_an_emergency_and_shows_the_planned_bakes() -> None:
    obj = with_status(True, stage="Bake", wave=0, stableReplicas=10, policy=AWAITING["policy"],
                      plan=[{"replicas": 1, "bake": "2s"}, {"weight": 50, "bake": "2s"}, {"weight": 100, "bake": "2s"}])
    lines = view.status_view(obj).splitlines()
    assert any(line.startswith("Emergency:    yes (break glass): every wave bakes at most 2s") for line in lines)
    assert any(line.startswith("Waves:") and line.endswith("(as planned at the start)") for line in lines)
    assert [line.split()[-3:-1] for line in lines if "bake 2s" in line] != []
    assert not any("bake 2m" in line for line in lines), "the plan's bakes, not the spec's"
    assert not any(line.startswith("Emergency") for line in view.status_view(with_status(False)).splitlines())


def test_the_audit_reports_an_emergency_release_as_such() -> None:
    from datetime import UTC, datetime
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    report = audit.build_report([with_status(True, policy=AWAITING["policy"]), with_status(False)], [],
                                rng=audit.Range(), now=now, scope="namespace shop")
    records = sorted(report["rollouts"], key=lambda r: not r["emergency"])
    assert [(r["emergency"], bool(r["emergencyDetail"])) for r in records] == [(True, True), (False, False)]
    text = audit.render_markdown(report)
    assert f"| shop/{records[0]['name']} (EMERGENCY) | Progressing |" in text
    assert f"## shop/{records[0]['name']} (EMERGENCY): Progressing" in text
    assert "| Emergency | yes (break glass): every wave bakes at most 2s (emergencyBake, set by tier1)" in text
    assert "| Emergency | no |" in text


def test_help_describes_every_release_flag_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["release", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "kubectl guarded release shop --image app=" in out and "exit codes:" in out
    assert "kubectl guarded release shop --config shop-config --from-file settings.json" in out
    for flag in ("--image", "--env", "--config", "--secret", "--from-file", "--from-literal", "--remove-key",
                 "--wave", "--description", "--ticket", "--rollback-plan", "--ai-assisted",
                 "--emergency", "--name", "--dry-run", "--output", "--wait", "--watch", "--timeout", "--namespace",
                 "--context", "--kubeconfig"):
        assert flag in out, flag
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "release" in capsys.readouterr().out
