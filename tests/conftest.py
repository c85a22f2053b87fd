"""Fixtures shared by the integration and end-to-end suites (unit tests never touch them)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from operator_process import OperatorProcess, stop_shared
from testbed import Cluster, connect

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if (HERE / "integration") in path.parents:
            item.add_marker(pytest.mark.integration)
        elif (HERE / "e2e") in path.parents:
            item.add_marker(pytest.mark.e2e)
    # Journeys on the cluster first, unit tests last: run side by side (make test), the unit tests then fill
    # the workers' idle time at the end instead of a long journey starting last.
    items.sort(key=lambda item: (HERE / "unit") in Path(str(item.fspath)).parents)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """One test bed for the whole run: an already running one, a given kubeconfig, or a new one."""
    return connect()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (tests isolate themselves by namespace)."""
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{secrets.token_hex(3)}"
    core = kubernetes.client.CoreV1Api(cluster.api())
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(
            name=name, labels={"guarded.dev/test": "true"}))
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def _shared_state() -> Path | None:
    """Under pytest-xdist, the file that names the one operator every worker of this run shares."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return Path(tempfile.gettempdir()) / f"guarded-shared-operator-{run}.json" if run else None


def pytest_configure(config: pytest.Config) -> None:
    """The controller names the run, so that it can find the shared operator the workers start."""
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        config.option.testrunuid = config.option.testrunuid or uuid.uuid4().hex


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (not a worker) ends the shared operator once every worker has ended."""
    uid = getattr(session.config.option, "testrunuid", None)
    if hasattr(session.config, "workerinput") or not uid:
        return
    state = Path(tempfile.gettempdir()) / f"guarded-shared-operator-{uid}.json"
    if state.exists():
        stop_shared(state)
        OperatorProcess(connect()).remove_webhooks()
        state.unlink(missing_ok=True)
    Path(f"{state}.lock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    """The operator running against the test cluster as its own identity, for the whole session.

    With pytest-xdist (`make test` runs the tests not marked exclusive on several workers) one operator serves
    every worker, as one operator serves a whole cluster: the first worker to ask starts it, the others attach,
    and the controller stops it at the end. Tests that stop, kill or replace it are marked exclusive and run
    afterwards in a pass of their own."""
    state_file = _shared_state()
    if state_file is not None:
        with open(f"{state_file}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if state_file.exists():
                shared = OperatorProcess.attached(cluster, json.loads(state_file.read_text()))
            else:
                shared = OperatorProcess(cluster)
                shared.shared = True
                shared.install()
                shared.start()
                state_file.write_text(json.dumps(shared.state()))
        yield shared
        return
    proc = OperatorProcess(cluster)
    proc.install()
    proc.start()
    yield proc
    proc.stop()
    proc.remove_webhooks()
