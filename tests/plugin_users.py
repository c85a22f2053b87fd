"""The kubectl plugin run by the test bed's real users, each through their own kubeconfig context."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guardrails import Team
from testbed import Cluster

PLUGIN = Path(sys.executable).parent / "kubectl-guarded"


def plugin(cluster: Cluster, user: str, *args: str) -> list[str]:
    return [str(PLUGIN), "--kubeconfig", cluster.kubeconfig, "--context", f"guarded-{user}", *args]


def as_user(cluster: Cluster, user: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The plugin run by `user` through their own kubeconfig context (never a crash)."""
    proc = subprocess.run(plugin(cluster, user, *args), capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def users_team(cluster: Cluster, namespace: str) -> Team:
    """A team namespace where alice, bob, carol and dave work, or a skip where users have no contexts."""
    if cluster.testbed_dir is None:
        pytest.skip("running the plugin as alice and bob needs the local test bed's per-user contexts")
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: run `pip install -e .` so the kubectl-guarded entry point exists")
    return Team(cluster, namespace)
