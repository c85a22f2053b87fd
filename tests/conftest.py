"""Fixtures shared by the integration and end-to-end suites (unit tests never touch them)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from operator_process import OperatorProcess
from testbed import Cluster, connect

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if (HERE / "integration") in path.parents:
            item.add_marker(pytest.mark.integration)
        elif (HERE / "e2e") in path.parents:
            item.add_marker(pytest.mark.e2e)


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


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    """The operator running against the test cluster as its own identity, for the whole session."""
    proc = OperatorProcess(cluster)
    proc.install()
    proc.start()
    yield proc
    proc.stop()
    proc.remove_webhooks()
