"""Access to the cluster and Prometheus that integration and end-to-end tests run against.

Two sources, in this order:
  * GUARDED_TEST_KUBECONFIG (and optionally GUARDED_TEST_PROMETHEUS_URL): any cluster, e.g. kind.
    Users are then acted as through impersonation by the kubeconfig's (admin) identity.
  * otherwise the local test bed of hack/testbed.sh, started if it is not running.
    Users are then real token-authenticated identities with their own kubeconfig contexts.

Like crate-operator's conftest, it refuses a kube context that does not look like a test one,
so that a stray KUBECONFIG never points the suite at production.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parent.parent
TESTBED_SCRIPT = ROOT / "hack" / "testbed.sh"

# Who is who in the test bed (hack/testbed.sh writes the same users into the API server's token file).
USERS: dict[str, tuple[str, list[str]]] = {
    "admin": ("admin", ["system:masters"]),
    "alice": ("alice", ["engineers"]),
    "bob": ("bob", ["engineers"]),
    "carol": ("carol", ["engineers", "senior-engineers"]),
    "dave": ("dave", ["engineers"]),
    "operator": ("system:serviceaccount:guarded-rollouts:guarded-operator",
                 ["system:serviceaccounts", "system:serviceaccounts:guarded-rollouts"]),
}

TEST_CONTEXT_PATTERN = re.compile(r"(guarded|kind-|k3d-|minikube|test)")


@dataclass
class Cluster:
    kubeconfig: str
    kubectl_path: str
    prometheus_url: str | None
    testbed_dir: Path | None
    impersonate: bool
    _clients: dict[str, kubernetes.client.ApiClient] = field(default_factory=dict)

    def context_for(self, user: str) -> str | None:
        return f"guarded-{user}" if not self.impersonate else None

    def api(self, user: str = "admin") -> kubernetes.client.ApiClient:
        """An API client that the API server authenticates as `user`."""
        if user in self._clients:
            return self._clients[user]
        if self.impersonate:
            client = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
            if user != "admin":
                name, groups = USERS[user]
                client.set_default_header("Impersonate-User", name)
                # One header value only: the most specific group (tests bind RBAC to every group).
                client.set_default_header("Impersonate-Group", groups[-1])
        else:
            client = kubernetes.config.new_client_from_config(
                config_file=self.kubeconfig, context=self.context_for(user)
            )
        self._clients[user] = client
        return client

    def kubectl_args(self, user: str = "admin") -> list[str]:
        args = [self.kubectl_path, "--kubeconfig", self.kubeconfig]
        if self.impersonate:
            if user != "admin":
                name, groups = USERS[user]
                args += ["--as", name] + [f"--as-group={g}" for g in groups]
        else:
            args += ["--context", f"guarded-{user}"]
        return args

    def kubectl(self, *args: str, user: str = "admin", input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.kubectl_args(user), *args], input=input, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def apply(self, manifest: dict | list[dict] | str, user: str = "admin", namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(
            manifest if isinstance(manifest, list) else [manifest]
        )
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, user=user, input=text, check=check)

    # -- Prometheus scrape targets (test bed only: file-based service discovery) --
    def add_scrape_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> Path:
        if self.testbed_dir is None:
            raise RuntimeError("scrape targets can only be added to the local test bed's Prometheus")
        path = self.testbed_dir / "prometheus" / "targets" / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels or {}}]))
        tmp.rename(path)
        return path

    def remove_scrape_target(self, name: str) -> None:
        if self.testbed_dir is not None:
            (self.testbed_dir / "prometheus" / "targets" / f"{name}.json").unlink(missing_ok=True)


def _read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"export (\w+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
    return env


def connect() -> Cluster:
    external = os.environ.get("GUARDED_TEST_KUBECONFIG")
    if external:
        cfg = yaml.safe_load(Path(external).read_text())
        context = cfg.get("current-context", "")
        if not TEST_CONTEXT_PATTERN.search(context) and os.environ.get("GUARDED_TEST_ALLOW_ANY_CONTEXT") != "1":
            raise RuntimeError(
                f"refusing to run tests against kube context {context!r}: it does not look like a test "
                "cluster (set GUARDED_TEST_ALLOW_ANY_CONTEXT=1 if you are sure)"
            )
        return Cluster(
            kubeconfig=external,
            kubectl_path=os.environ.get("GUARDED_KUBECTL", "kubectl"),
            prometheus_url=os.environ.get("GUARDED_TEST_PROMETHEUS_URL"),
            testbed_dir=None,
            impersonate=True,
        )
    subprocess.run(["bash", str(TESTBED_SCRIPT), "up"], check=True, timeout=3600)
    run_dir = Path(os.environ.get("GUARDED_TESTBED_DIR", ROOT / ".testbed"))
    env = _read_env_file(run_dir / "env")
    return Cluster(
        kubeconfig=env["KUBECONFIG"],
        kubectl_path=env["GUARDED_KUBECTL"],
        prometheus_url=env["GUARDED_PROMETHEUS_URL"],
        testbed_dir=Path(env["GUARDED_TESTBED_DIR"]),
        impersonate=False,
    )


def helm_path() -> str:
    """Helm for the chart's tests: GUARDED_HELM, or the one hack/build-binaries.sh builds once and caches
    (the test bed's `up` builds it with the other binaries; a run against GUARDED_TEST_KUBECONFIG builds it here)."""
    if os.environ.get("GUARDED_HELM"):
        return os.environ["GUARDED_HELM"]
    hack = ROOT / "hack"
    subprocess.run(["bash", str(hack / "build-binaries.sh"), "helm"], check=True, capture_output=True, timeout=3600)
    where = subprocess.run(["bash", "-c", 'source "$0" && echo "$HELM_BIN_DIR/helm"', str(hack / "versions.sh")],
                           check=True, capture_output=True, text=True)
    return where.stdout.strip()
