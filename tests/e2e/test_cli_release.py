"""`kubectl guarded release` as alice runs it, against the real operator and API server.

alice releases a new image of the shop from flags, as an emergency fix: the plugin creates the
GuardedRollout (she is its author because the API server says so, not because she typed it), prints it
and what it waits for, an approval by someone other than her, and with --watch follows it. Bob approves
with the plugin; alice's watch ends Succeeded after waves that baked the policy's emergency minimum. The
same release asked again is refused, naming the one that exists. Each user runs the plugin through their
own kubeconfig context, so this needs the local test bed.
"""

from __future__ import annotations

import re
import subprocess

import kubernetes
import pytest
import yaml

from guardrails import Team, policy
from operator_process import OperatorProcess
from plugin_users import as_user, plugin, users_team
from testbed import Cluster
from waiting import eventually

IMAGE = "registry.example/shop:2.2.0"
DEFAULTS = {"waves": [{"replicas": 1, "bake": "3s"}, {"weight": 100, "bake": "2s"}]}




@pytest.fixture
def team(cluster: Cluster, namespace: str) -> Team:
    return users_team(cluster, namespace)


def test_alice_releases_an_emergency_fix_from_flags_bob_approves_and_her_watch_ends_succeeded(
        cluster: Cluster, namespace: str, team: Team, operator: OperatorProcess) -> None:
    team.shop(replicas=4, labels={"tier": "1"})
    rules = {"requiredApprovals": 1, "emergencyBake": "1s", "requiredDocumentation": ["ticket"]}
    with policy(cluster, team, rules, guardWorkloads=True, releaseDefaults=DEFAULTS,
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}) as policy_name:
        flags = ["shop", "--image", f"app={IMAGE}", "-n", namespace]

        # Who may read the policies gets their releaseDefaults; alice (namespace rights only) the default.
        planned = as_user(cluster, "admin", "release", *flags, "--dry-run")
        assert planned.returncode == 0, planned.stderr
        assert yaml.safe_load(planned.stdout)["spec"]["waves"] == DEFAULTS["waves"]
        server = as_user(cluster, "alice", "release", *flags, "--dry-run=server")
        assert server.returncode == 0, server.stderr
        assert "created (server dry run)" in server.stdout.splitlines()[0]
        assert "[the GuardedRollout default (RolloutPolicies not readable: " in server.stdout, server.stdout
        assert "  Authors:        alice" in server.stdout.splitlines(), "stamped by the webhook on a dry run too"
        assert team.custom().list_namespaced_custom_object("rollouts.guarded.dev", "v1alpha1", namespace,
                                                           "guardedrollouts")["items"] == []

        release = [*flags, "--wave", "1:1m", "--wave", "100%:1m", "--emergency", "--ticket", "INC-7",
                   "--description", "fix the checkout crash", "--watch", "--timeout", "180"]
        proc = subprocess.Popen(plugin(cluster, "alice", "release", *release), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            match = re.fullmatch(rf'guardedrollout/(shop-[0-9a-f]{{10}}) created in namespace "{namespace}"\n', first)
            assert match, first
            name = match.group(1)
            team.wait_phase(name, "AwaitingApproval")

            approved = as_user(cluster, "bob", "approve", name, "-n", namespace, "--wait", "30")
            assert approved.returncode == 0, approved.stdout + approved.stderr
            assert "  Emergency:      yes (break glass): every wave bakes at most 1s" in approved.stdout
            # The rest as it comes (the first line's read buffered some of it): the watch ends by itself,
            # or its --timeout ends it.
            rest = proc.stdout.read()
            err = proc.stderr.read() if proc.stderr is not None else ""
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, first + rest + err
        lines = (first + rest).splitlines()
        print("\n".join(lines))
        assert lines[1:7] == [
            "  Target:         Deployment/shop",
            f"  Change:         app: image {IMAGE}",
            "  Waves:          1 pod (bake 1m), 100% (4 pods, bake 1m)  [--wave]",
            "  Description:    fix the checkout crash",
            "  Ticket:         INC-7",
            "  Emergency:      yes (break glass)",
        ]
        assert lines[7] == "  Authors:        alice"
        assert "Phase:          AwaitingApproval" in lines
        assert ("Emergency:      yes (break glass): every wave bakes at most 1s (emergencyBake, set by "
                f"{policy_name}); needs at least one approval by someone other than its authors") in lines
        assert ("Waiting for:    0/1 approvals of revision 1 (required by "
                f"{policy_name}; authors alice cannot approve)") in lines
        assert f"Approve:        someone other than alice: kubectl guarded approve {name} -n {namespace}" in lines
        assert lines[-1].split()[1] == "Succeeded", lines[-1]

        status = team.status(name)
        assert [w["bake"] for w in status["plan"]] == ["1s", "1s"] and status["emergency"] is True
        assert status["authors"] == ["alice"]

        again = as_user(cluster, "alice", "release", *release[:-3])
        assert again.returncode == 1 and "already exists" in again.stderr, again.stdout + again.stderr
        assert f"kubectl guarded status {name} -n {namespace}" in again.stderr

        shown = as_user(cluster, "alice", "status", name, "-n", namespace).stdout.splitlines()
        assert any(line.startswith("Emergency:    yes (break glass)") for line in shown), shown
        eventually(lambda: team.ready("shop") == 4, timeout=60, what="4 Ready shop pods")


def test_alice_releases_a_configmap_and_a_secret_from_files_and_literals_and_no_secret_value_is_printed(
        cluster: Cluster, namespace: str, team: Team, operator: OperatorProcess, tmp_path) -> None:
    v1 = kubernetes.client.CoreV1Api(cluster.api())
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "shop-config"},
                                                "data": {"settings.json": '{"checkout": "v1"}', "region": "eu"}})
    v1.create_namespaced_secret(namespace, {"metadata": {"name": "shop-secret"}, "stringData": {"token": "old"}})
    shop = team.shop(replicas=4)
    shop.apps.patch_namespaced_deployment("shop", namespace, {"spec": {"template": {"spec": {
        "volumes": [{"name": "settings", "configMap": {"name": "shop-config"}},
                    {"name": "token", "secret": {"secretName": "shop-secret"}}]}}}})
    eventually(lambda: shop.deployment("shop").status.updated_replicas == 4 and shop.ready("shop") == 4,
               timeout=90, what="the shop reading its configuration")
    settings = tmp_path / "settings.json"
    settings.write_text('{"checkout": "v2"}')
    secret_value = "pl41n-t0ken-n0t-for-print"
    out = as_user(cluster, "alice", "release", "shop", "-n", namespace, "--config", "shop-config",
                  "--from-file", str(settings), "--secret", "shop-secret", "--from-literal", f"token={secret_value}",
                  "--wave", "1:1s", "--wave", "100%:1s", "--watch", "--timeout", "150", timeout=200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert secret_value not in out.stdout + out.stderr
    name = re.search(r"guardedrollout[.\w/-]*/([\w.-]+) created", out.stdout)
    assert name, out.stdout
    status = team.status(name.group(1))
    assert status["phase"] == "Succeeded" and status["authors"] == ["alice"]
    versions = {c["kind"]: c["version"] for c in status["config"]}
    volumes = shop.deployment("shop").spec.template.spec.volumes
    assert [v.config_map.name for v in volumes if v.config_map] == [versions["ConfigMap"]]
    assert [v.secret.secret_name for v in volumes if v.secret] == [versions["Secret"]]
    new = v1.read_namespaced_config_map(versions["ConfigMap"], namespace).data
    assert new == {"settings.json": '{"checkout": "v2"}', "region": "eu"}
    shown = as_user(cluster, "alice", "status", name.group(1), "-n", namespace)
    assert shown.returncode == 0 and versions["Secret"] in shown.stdout and secret_value not in shown.stdout
