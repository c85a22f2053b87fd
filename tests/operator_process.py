"""The operator as a real process, the way it runs outside a cluster: killable, restartable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from testbed import ROOT, Cluster

WEBHOOK_CONFIGURATION = "guarded-rollouts.rollouts.guarded.dev"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def end(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child process that still runs, SIGKILL it after 15 s, and reap it."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class OperatorProcess:
    def __init__(self, cluster: Cluster, *, extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 webhooks: bool = True) -> None:
        self.cluster = cluster
        self.extra_args, self.extra_env, self.webhooks = list(extra_args), dict(env or {}), webhooks
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="guarded-operator-")) / "operator.log"
        self.port = _free_port()
        self.alerts_port = _free_port()
        self.metrics_port = _free_port()  # /metrics and /readyz; fixed too, so Prometheus keeps one target
        self.webhook_port = _free_port()  # fixed for this process's lifetime: restarts keep the webhook URL
        self.shared = False  # one operator serving several pytest workers at once: no one may stop it

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def alerts_url(self) -> str:
        return f"http://127.0.0.1:{self.alerts_port}/alertmanager"

    def install(self) -> None:
        """CRDs and the operator's least-privilege RBAC, from the same manifests users install."""
        self.cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "base"))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                             "crd/guardedrollouts.rollouts.guarded.dev", "crd/rolloutapprovals.rollouts.guarded.dev",
                             "crd/rolloutpolicies.rollouts.guarded.dev")
        self.remove_webhooks()

    def webhook_args(self) -> list[str]:
        """The API server must reach the webhooks: on the test bed at 127.0.0.1; a kind cluster's API server
        runs in a container and needs the host's address on its network (GUARDED_TEST_WEBHOOK_HOST)."""
        # One certificate for this process's lifetime, as a Secret gives every replica: a restarted operator
        # must not serve a new CA while the API server still holds the old caBundle.
        tls = ["--webhook-tls-dir", str(self.log_path.parent / "webhook-tls")]
        host = os.environ.get("GUARDED_TEST_WEBHOOK_HOST")
        if host:
            return ["--webhook-listen", f"0.0.0.0:{self.webhook_port}", "--webhook-host", host, *tls]
        return ["--webhook-listen", f"127.0.0.1:{self.webhook_port}", *tls]

    def webhooks_registered(self) -> bool:
        """kopf has pointed the webhook configuration at this process (it fails closed until then)."""
        out = self.cluster.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--ignore-not-found",
                                   "-o", "jsonpath={.webhooks[*].clientConfig.url}", check=False)
        return f":{self.webhook_port}/" in out.stdout

    def remove_webhooks(self) -> None:
        """The webhooks fail closed and outlive the operator; a test run leaves none behind pointing nowhere."""
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.cluster.kubectl("delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found")

    def start(self) -> None:
        if os.environ.get("PYTEST_XDIST_WORKER") and not self.shared:
            raise RuntimeError("a second operator beside the one the parallel tests share: mark the test "
                               "@pytest.mark.exclusive so that it runs alone")
        env = dict(os.environ, KUBECONFIG=self.cluster.kubeconfig, PYTHONUNBUFFERED="1", **self.extra_env)
        args = [sys.executable, "-m", "guarded.main", "--liveness", f"http://127.0.0.1:{self.port}/healthz",
                "--alerts-listen", f"127.0.0.1:{self.alerts_port}", "--metrics-listen", self.metrics_address,
                *self.extra_args]
        if self.webhooks:
            args += self.webhook_args()
        if self.cluster.prometheus_url:
            args += ["--prometheus-url", self.cluster.prometheus_url]
        context = self.cluster.context_for("operator")
        if context:
            args += ["--context", context]
        log = self.log_path.open("ab")
        # Its own session: a shared operator outlives the pytest worker that happened to start it.
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=self.shared)
        # A slower start (an operator under tracemalloc, bench/scale's memory report) may be given more time.
        patience = float(os.environ.get("GUARDED_OPERATOR_START_SECONDS", "60"))
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if (requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok and self.ready()
                        and (not self.webhooks or self.webhooks_registered())):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy after {patience:g}s:\n{self.tail()}")

    def ready(self) -> bool:
        return requests.get(f"http://{self.metrics_address}/readyz", timeout=5).status_code == 200

    def state(self) -> dict[str, object]:
        """What another pytest worker needs to use this running operator (see attached)."""
        assert self.proc is not None
        return {"pid": self.proc.pid, "port": self.port, "alerts_port": self.alerts_port,
                "metrics_port": self.metrics_port, "webhook_port": self.webhook_port, "log": str(self.log_path)}

    @classmethod
    def attached(cls, cluster: Cluster, state: dict[str, object]) -> OperatorProcess:
        """The shared operator another worker started: usable, never stoppable from here."""
        proc = cls(cluster)
        proc.shared = True
        proc.port, proc.alerts_port = int(state["port"]), int(state["alerts_port"])  # type: ignore[call-overload]
        proc.metrics_port, proc.webhook_port = int(state["metrics_port"]), int(state["webhook_port"])  # type: ignore[call-overload]
        proc.log_path = Path(str(state["log"]))
        return proc

    def _exclusive(self, what: str) -> None:
        if self.shared:
            raise RuntimeError(f"{what} of the operator that other tests share: mark the test "
                               "@pytest.mark.exclusive so that it runs alone")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a node failure would do it."""
        self._exclusive("a kill")
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self._exclusive("a stop")
        end(self.proc)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def stop_shared(state_file: Path) -> None:
    """End the shared operator recorded in state_file (by the pytest controller, after every worker ended)."""
    try:
        pid = int(json.loads(state_file.read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
