"""Notifications from the real operator to HTTP receivers in this test process (on 127.0.0.1): a Slack-compatible
sink and a JSON sink from the operator's environment, and a policy's sink, read from a Secret, that never answers."""

from __future__ import annotations

import base64
import json
import secrets
import select
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes
import pytest

from operator_process import OperatorProcess
from rollouts import (
    ANALYSIS,
    Shop,
    behaviour_change,
    guarded_rollout,
    serving_shop,
)
from story import then, when
from testbed import Cluster
from waiting import eventually

GROUP, VERSION = "rollouts.guarded.dev", "v1alpha1"
WAVES = [{"replicas": 1, "bake": "30s"}, {"weight": 100, "bake": "5s"}]

pytestmark = pytest.mark.exclusive  # it replaces the shared operator (with one whose environment names sinks)


class Receiver(ThreadingHTTPServer):
    """Records every JSON POST by path; on /hang it answers nothing and holds the connection until the
    operator gives up on it (closes it) or the test ends."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict]] = []
        self.holding: list[dict] = []   # bodies of requests to /hang whose connection is still open
        self.lock, self.released = threading.Lock(), threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def bodies(self, path: str) -> list[dict]:
        with self.lock:
            return [body for p, body in self.received if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.server.lock:
            self.server.received.append((self.path, body))
        if self.path == "/hang":
            self._hold(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _hold(self, body: dict) -> None:
        with self.server.lock:
            self.server.holding.append(body)
        conn: socket.socket = self.connection
        while not self.server.released.is_set():
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(1, socket.MSG_PEEK):
                break  # the operator closed it: it gave up waiting
        with self.server.lock:
            self.server.holding.remove(body)
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def notifying_operator(cluster: Cluster, namespace: str, operator: OperatorProcess,
                       receiver: Receiver) -> Iterator[OperatorProcess]:
    """The session's operator steps aside for one with operator-wide sinks (as a platform team sets them in the
    Deployment's environment) and a request timeout longer than the test, so the dead sink holds its request."""
    operator.stop()
    proc = OperatorProcess(cluster, env={
        "GUARDED_NOTIFY_SLACK_URL": receiver.url("/slack"), "GUARDED_NOTIFY_WEBHOOK_URL": receiver.url("/hook"),
        "GUARDED_NOTIFY_NAMESPACE": namespace, "GUARDED_NOTIFY_TIMEOUT": "600"})
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        operator.start()


@pytest.fixture
def dead_sink_policy(cluster: Cluster, namespace: str, receiver: Receiver) -> Iterator[str]:
    """A RolloutPolicy for this namespace whose sink (URL in a Secret) takes every request and never answers."""
    core = kubernetes.client.CoreV1Api(cluster.api())
    core.create_namespaced_secret(namespace, kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="pager"),
        data={"url": base64.b64encode(receiver.url("/hang").encode()).decode()}))
    name = f"test-notify-{secrets.token_hex(3)}"
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    custom.create_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": name},
        "spec": {"selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                 "notifications": [{"name": "pager", "type": "webhook", "events": ["Started"],
                                    "urlFrom": {"secretKeyRef": {"name": "pager", "key": "url"}}}]}})
    try:
        yield name
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", name)


@pytest.fixture
def shop(cluster: Cluster, namespace: str, notifying_operator: OperatorProcess, dead_sink_policy: str) -> Shop:
    return serving_shop(cluster, namespace)


def test_a_rolled_back_release_is_told_once_to_each_sink_with_its_evidence_while_a_dead_sink_holds_on(
        shop: Shop, namespace: str, receiver: Receiver, dead_sink_policy: str) -> None:
    body = guarded_rollout("bad", waves=WAVES, analysis=ANALYSIS)
    body["spec"]["change"]["podTemplatePatch"] = behaviour_change(order_ratio="0.0005")
    bad = when.rollout_created(shop, "bad", body=body)
    status = then.phase_is(bad, "RolledBack", within=120)
    assert status["rollbackReason"] == "AnalysisFailed"
    evidence = next(h for h in status["history"] if h["reason"] == "RollingBack")["message"]

    # The operator-wide sinks hear of every rollout in the cluster, and rollouts of earlier tests may still be
    # moving (their namespaces terminating) when this operator starts: only this rollout's messages count.
    def hook_bodies() -> list[dict]:
        return [b for b in receiver.bodies("/hook") if (b["namespace"], b["rollout"]) == (namespace, "bad")]

    def slack_bodies() -> list[dict]:
        return [b for b in receiver.bodies("/slack") if f"GuardedRollout {namespace}/bad " in b["text"]]

    def told() -> tuple[list[dict], list[dict]]:
        slack = [b for b in slack_bodies() if "is rolled back" in b["text"]]
        hook = [b for b in hook_bodies() if b["event"] == "RolledBack"]
        assert slack and hook
        return slack, hook
    slack, hook = eventually(told, timeout=30, what="the rollback told to the Slack and JSON sinks")

    # The dead sink was told of the start and has not answered since: the operator still waits on that
    # request, yet the release was judged, rolled back, and the rollback told elsewhere meanwhile.
    with receiver.lock:
        held = [b["event"] for b in receiver.holding]
    assert held == ["Started"], held
    assert all(b["event"] == "Started" for b in receiver.bodies("/hang")), "the policy's sink asked for Started only"

    (message,) = hook
    assert (message["rollout"], message["namespace"], message["phase"]) == ("bad", namespace, "RollingBack")
    assert message["evidence"] == evidence and "order-rate" in evidence
    assert message["command"] == f"kubectl guarded history bad -n {namespace}"
    (chat,) = slack
    assert evidence in chat["text"]
    # One message per transition the history records: the start (which names its first wave), any later
    # wave (one CI run saw this rollback in wave 2), the rollback. Deliveries of different decisions run
    # concurrently (each its own task), so only the rollback, seconds after the others, is surely last.
    later_waves = sum(h["reason"] == "WaveStarted" for h in status["history"]) - 1
    events = [b["event"] for b in hook_bodies()]
    told_once = sorted(["Started", *["WaveStarted"] * later_waves, "RolledBack"])
    assert sorted(events) == told_once, (events, status["history"])
    assert events[-1] == "RolledBack", events
    assert len(slack_bodies()) == len(events)
