"""The operator as a real process, the way it runs outside a cluster: killable, restartable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from testbed import ROOT, Cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="guarded-operator-")) / "operator.log"
        self.port = _free_port()
        self.alerts_port = _free_port()

    @property
    def alerts_url(self) -> str:
        return f"http://127.0.0.1:{self.alerts_port}/alertmanager"

    def install(self) -> None:
        """CRDs and the operator's least-privilege RBAC, from the same manifests users install."""
        self.cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "base"))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                             "crd/guardedrollouts.rollouts.guarded.dev")

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=self.cluster.kubeconfig, PYTHONUNBUFFERED="1")
        args = [sys.executable, "-m", "guarded.main", "--liveness", f"http://127.0.0.1:{self.port}/healthz",
                "--alerts-listen", f"127.0.0.1:{self.alerts_port}"]
        if self.cluster.prometheus_url:
            args += ["--prometheus-url", self.cluster.prometheus_url]
        context = self.cluster.context_for("operator")
        if context:
            args += ["--context", context]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy after 60s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a node failure would do it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
