"""`kubectl guarded` as a user runs it: the real executable, against the real operator and cluster."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from operator_process import OperatorProcess
from rollouts import Shop, guarded_rollout
from story import Rollout, when
from testbed import Cluster
from waiting import eventually

BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-guarded"
COMMANDS = ["list", "status", "history", "watch", "abort", "pause", "resume", "promote", "retry", "approve", "audit"]


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: run `pip install -e .` so the kubectl-guarded entry point exists")


def guarded(cluster: Cluster, *args: str, user: str = "admin", timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the plugin as `user` (a kubeconfig context on the local test bed; the kubeconfig's own otherwise)."""
    connection = ["--kubeconfig", cluster.kubeconfig]
    if cluster.testbed_dir is not None:
        connection += ["--context", f"guarded-{user}"]
    elif user != "admin":
        pytest.skip("acting as another user needs the local test bed's contexts")
    proc = subprocess.run([str(PLUGIN), *connection, *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def via_kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    """`kubectl guarded ...`: kubectl finds the plugin on PATH."""
    kubectl = shutil.which(cluster.kubectl_path) or cluster.kubectl_path
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([kubectl, "guarded", *args], capture_output=True, text=True, timeout=60, env=env)


def table_row(output: str, name: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.split()[:1] == [name])


def at(shop: Shop, name: str, wave: int, stage: str = "Bake") -> None:
    when.rollout_reaches(Rollout(shop, name), stage=stage, wave=wave, within=90,
                         what=f"wave {wave + 1} in stage {stage}")


def test_pause_resume_promote_then_watch_until_succeeded(cluster: Cluster, namespace: str,
                                                          operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(4)
    shop.create_rollout(guarded_rollout("release", waves=[
        {"replicas": 1, "bake": "30m"}, {"weight": 50, "bake": "2s"}, {"weight": 100, "bake": "2s"}]))
    at(shop, "release", 0)

    listed = guarded(cluster, "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["NAME", "TARGET", "PHASE", "WAVE", "CANARY", "AGE", "MESSAGE"]
    assert table_row(listed.stdout, "release")[:5] == ["release", "shop", "Progressing", "1/3", "25%"]
    everywhere = via_kubectl(cluster, "ls", "-A", "--kubeconfig", cluster.kubeconfig,
                             *(["--context", "guarded-admin"] if cluster.testbed_dir else []))
    assert everywhere.returncode == 0, everywhere.stderr
    assert table_row(everywhere.stdout, namespace)[:4] == [namespace, "release", "shop", "Progressing"]

    paused = guarded(cluster, "pause", "release", "-n", namespace)
    assert (paused.returncode, paused.stdout.strip()) == (0, "accepted"), paused.stderr
    shown = guarded(cluster, "status", "release", "-n", namespace)
    assert "Phase:        Paused (stage Bake)" in shown.stdout.splitlines()
    assert "current: paused" in shown.stdout

    resumed = guarded(cluster, "-n", namespace, "resume", "release")
    assert (resumed.returncode, resumed.stdout.strip()) == (0, "accepted"), resumed.stderr
    promoted = guarded(cluster, "-n", namespace, "promote", "release", "--wait", "30")
    assert (promoted.returncode, promoted.stdout.strip()) == (0, "accepted"), promoted.stderr

    watched = guarded(cluster, "watch", "release", "-n", namespace, "--timeout", "180", timeout=240)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = watched.stdout.splitlines()
    assert "Succeeded  [####################] wave 3/3" in lines[-1]
    states = [line.split(maxsplit=1)[1] for line in lines]
    assert all(a != b for a, b in itertools.pairwise(states)), "one line per change"

    history = guarded(cluster, "history", "release", "-n", namespace)
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines()[0].split() == ["TIME", "WAVE", "REASON", "MESSAGE"]
    waves = [row[1] for row in map(str.split, history.stdout.splitlines()[1:]) if row[2] == "WaveStarted"]
    assert waves == ["1", "2", "3"]
    assert any(row[2] == "PromoteRequested" for row in map(str.split, history.stdout.splitlines()[1:]))

    as_json = guarded(cluster, "status", "release", "-n", namespace, "-o", "json")
    obj = json.loads(as_json.stdout)
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["lastRequest"]["action"] == "promote"
    assert shop.image() == "registry.example/shop:2.0.0"


def test_abort_mid_wave_rolls_back_and_a_second_abort_is_rejected(cluster: Cluster, namespace: str,
                                                                   operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(4)
    shop.create_rollout(guarded_rollout("release", waves=[
        {"replicas": 1, "bake": "2s"}, {"weight": 50, "bake": "30m"}, {"weight": 100, "bake": "2s"}]))
    at(shop, "release", 1)

    aborted = guarded(cluster, "abort", "release", "-n", namespace)
    assert (aborted.returncode, aborted.stdout.strip()) == (0, "accepted"), aborted.stderr

    def rolled_back() -> str | None:
        out = guarded(cluster, "status", "release", "-n", namespace).stdout
        return out if "Phase:        RolledBack (stage RolledBack)" in out.splitlines() else None
    view = eventually(rolled_back, timeout=90, interval=0.5, what="status showing RolledBack")
    assert "Rollback:     Aborted" in view.splitlines()
    assert any(line.split()[:2] == [">", "2"] and line.endswith("rolled back") for line in view.splitlines())
    assert "Last request: abort" in view and ": Accepted at " in view

    again = guarded(cluster, "abort", "release", "-n", namespace)
    assert again.returncode == 3, again.stdout + again.stderr
    assert again.stdout.strip() == "rejected: nothing to abort in stage RolledBack"

    watched = guarded(cluster, "watch", "release", "-n", namespace, "--timeout", "30")
    assert watched.returncode == 1 and "RolledBack" in watched.stdout

    retried = guarded(cluster, "retry", "release", "-n", namespace)
    assert (retried.returncode, retried.stdout.strip()) == (0, "accepted"), retried.stderr


def test_unknown_rollouts_and_forbidden_namespaces_are_errors_without_tracebacks(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    missing = guarded(cluster, "status", "no-such-rollout", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f'Error: guardedrollout "no-such-rollout" not found in namespace "{namespace}"'
    assert missing.stdout == ""
    for args in (["abort", "no-such-rollout"], ["history", "no-such-rollout"], ["watch", "no-such-rollout"]):
        proc = guarded(cluster, *args, "-n", namespace)
        assert proc.returncode == 1 and "not found" in proc.stderr, args

    empty = guarded(cluster, "list", "-n", namespace)
    assert (empty.returncode, empty.stdout) == (0, "")
    assert empty.stderr.strip() == f"No resources found in {namespace} namespace."

    if cluster.testbed_dir is not None:  # alice is a real user there, with no rights in this namespace
        denied = guarded(cluster, "status", "anything", "-n", namespace, user="alice")
        assert denied.returncode == 1
        assert denied.stderr.startswith("Error from server (Forbidden): ") and '"alice"' in denied.stderr


def test_help_of_the_plugin_and_of_every_command(cluster: Cluster) -> None:
    top = via_kubectl(cluster, "--help")
    assert top.returncode == 0, top.stderr
    assert all(command in top.stdout for command in COMMANDS)
    assert "examples:" in top.stdout and "exit codes:" in top.stdout
    flags = {"list": ["--all-namespaces", "--output"], "status": ["--output"], "history": ["--output"],
             "watch": ["--timeout"], "promote": ["--full", "--wait"], "abort": ["--wait"], "pause": ["--wait"],
             "resume": ["--wait"], "retry": ["--wait"], "approve": ["--comment", "--revision", "--wait"],
             "audit": ["--all-namespaces", "--since", "--until", "--output"]}
    for command in COMMANDS:
        proc = via_kubectl(cluster, command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert f"usage: kubectl guarded {command}" in proc.stdout and "examples:" in proc.stdout
        for flag in ["--namespace", "--context", "--kubeconfig", *flags[command]]:
            assert flag in proc.stdout, (command, flag)
    usage = subprocess.run([str(PLUGIN), "status"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "required: NAME" in usage.stderr
