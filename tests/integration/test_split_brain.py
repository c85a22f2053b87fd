"""Split brain: two peered replicas that both believe they lead, for a moment, and only one acts.

The older replica (A) is frozen by SIGSTOP at the worst moment: it has decided to raise the canary for
wave 2 and not yet done it (a freezepoint: the process stops itself there, see guarded.faults). It stays
stopped for longer than its peering lease, so the newer replica (B) takes over and drives the rollout
on, into the bake of the last wave (canary 4 pods, stable 0). Then A is woken with SIGCONT: it still
leads by priority and still holds its old decision ("canary to 2 pods"). Carried out, that decision
would take half the shop's Ready pods away under the last wave. It must be refused: the rollout has
moved on since A read it.

Checked from the outside: a watch on the namespace's Deployments sees every change the API server
accepts (a 0.2 s sampler misses a dip that is undone within half a second, as a stale write is once
the stale replica decides again), and a sampler reads the rollout's wave. Neither the pods asked for
(spec.replicas) nor the Ready ones of stable and canary together ever fall below the shop's replicas
minus its maxUnavailable (4 - 0), the canary never above its wave's bound, each wave entered once in
status.history, the release Succeeded with nothing left behind.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import kubernetes
import pytest

from operator_process import OperatorProcess
from story import Sampler, given, then, when
from testbed import ROOT, Cluster
from waiting import eventually

PEERING = ROOT / "manifests" / "install" / "peering.yaml"
LEASE = 5  # seconds: A's keep-alive counts this long (kopf renews it every second at this lifetime)
REPLICAS, MAX_UNAVAILABLE = 4, 0  # the shop (tests/rollouts.shop_deployment: maxUnavailable 0)
WAVES = [{"replicas": 1, "bake": "1s"}, {"weight": 50, "bake": "1s"}, {"weight": 100, "bake": "8s"}]
BOUNDS = [1, 2, 4]  # the most canary pods each wave allows on 4 pods
FREEZE = "act@ScaleCanary#1/release"  # A stops itself after deciding wave 2's canary, before acting on it

pytestmark = pytest.mark.exclusive  # it replaces the shared operator


def peers(cluster: Cluster) -> set[str]:
    out = cluster.kubectl("get", "clusterkopfpeering", "guarded-rollouts", "-o", "json")
    return set((json.loads(out.stdout).get("status") or {}).keys())


def stopped(proc: OperatorProcess) -> bool:
    """The process is stopped by a signal (state T in /proc), as the freezepoint leaves it."""
    assert proc.proc is not None
    fields = Path(f"/proc/{proc.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0] in ("T", "t")


def reconciled(proc: OperatorProcess, rollout: str, after: int = 0) -> bool:
    """The process's own log has a line about this rollout past byte `after`."""
    text = proc.log_path.read_bytes()[after:].decode(errors="replace")
    return any(f'"rollout": "{rollout}"' in line for line in text.splitlines())


class Seen(NamedTuple):
    at: float
    canary: int          # Ready pods of the canary
    stable: int          # Ready pods of the shop
    wave: int | None     # status.wave as sampled
    stage: str | None


class Cluster_watch(Sampler):
    """The shop and its rollout as the API server shows them, every 0.2 s."""

    def __init__(self, shop, rollout: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.shop, self.rollout = shop, rollout

    def sample(self) -> Seen:
        canary = self.shop.deployment(f"{self.shop.name}-canary")
        stable = self.shop.deployment(self.shop.name)
        status = self.shop.status(self.rollout)
        return Seen(time.monotonic(), (canary.status.ready_replicas or 0) if canary is not None else 0,
                    (stable.status.ready_replicas or 0) if stable is not None else 0,
                    status.get("wave"), status.get("stage"))


class Change(NamedTuple):
    at: float
    name: str
    replicas: int | None  # spec.replicas (None: deleted)
    ready: int


class DeploymentWatch:
    """Every change of the namespace's Deployments, from a watch (none is missed between samples)."""

    def __init__(self, shop) -> None:  # type: ignore[no-untyped-def]
        self.shop, self.changes = shop, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        listed = self.shop.apps.list_namespaced_deployment(self.shop.namespace)
        for d in listed.items:
            ready = d.status.ready_replicas or 0
            self.changes.append(Change(time.monotonic(), d.metadata.name, d.spec.replicas, ready))
        version = listed.metadata.resource_version
        while not self._stop.is_set():
            stream = kubernetes.watch.Watch().stream(self.shop.apps.list_namespaced_deployment, self.shop.namespace,
                                                     resource_version=version, timeout_seconds=2)
            for event in stream:
                d = event["object"]
                version = d.metadata.resource_version
                gone = event["type"] == "DELETED"
                self.changes.append(Change(time.monotonic(), d.metadata.name, None if gone else d.spec.replicas,
                                           0 if gone else (d.status.ready_replicas or 0)))

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def totals(self) -> list[tuple[float, int, int]]:
        """(when, pods asked for, Ready pods) of stable and canary together after each change."""
        state: dict[str, Change] = {}
        out = []
        for c in self.changes:
            state[c.name] = c
            out.append((c.at, sum(x.replicas or 0 for x in state.values()), sum(x.ready for x in state.values())))
        return out


def canary_above_bound(samples: list[Seen]) -> list[Seen]:
    """Samples whose canary exceeds the bound of every wave the status reached by then or within 2 s after
    (the operator acts first and writes the status second, so a wave's pods may show before its status)."""
    out = []
    for s in samples:
        waves = [x.wave for x in samples if x.at <= s.at + 2 and x.wave is not None]
        allowed = BOUNDS[max(waves)] if waves else 0
        if s.canary > allowed:
            out.append(s)
    return out


@pytest.fixture
def replicas(cluster: Cluster, operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """The session's operator steps aside; A (older, freezing at FREEZE) and B, peered, take its place."""
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")
    cluster.kubectl("apply", "-f", str(PEERING))
    operator.stop()
    a = OperatorProcess(cluster, extra_args=["--peering", "--peering-lifetime", str(LEASE)],
                        env={"POD_ID": "peer-a", "GUARDED_FREEZEPOINTS": FREEZE})
    b = OperatorProcess(cluster, extra_args=["--peering", "--peering-lifetime", str(LEASE)], env={"POD_ID": "peer-b"})
    try:
        a.start()
        eventually(lambda: "peer-a" in peers(cluster), timeout=60, what="peer-a keeping alive")
        b.start()
        eventually(lambda: {"peer-a", "peer-b"} <= peers(cluster), timeout=60, what="both peers keeping alive")
        yield a, b
    finally:
        for proc in (a, b):
            if proc.proc is not None and proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)  # a stopped process cannot take its SIGTERM
            proc.stop()
        operator.remove_webhooks()
        cluster.kubectl("delete", "-f", str(PEERING), "--ignore-not-found")
        operator.start()


def test_a_replica_woken_after_its_lease_ran_out_does_not_act_on_its_stale_decision(
        cluster: Cluster, namespace: str, replicas: tuple[OperatorProcess, OperatorProcess]) -> None:
    a, b = replicas
    shop = given.a_shop(cluster, namespace, replicas=REPLICAS)
    with Cluster_watch(shop, "release") as watch, DeploymentWatch(shop) as deployments:
        release = when.rollout_created(shop, "release", waves=WAVES)
        eventually(lambda: stopped(a), timeout=90, what="A frozen with its decision for wave 2 in hand")
        frozen_at = release.status()
        assert (frozen_at.get("stage"), frozen_at.get("wave")) == ("ScaleCanary", 1), release.where(frozen_at)
        assert shop.ready("shop-canary") == 1, "A froze before raising the canary for wave 2"
        assert not reconciled(b, "release"), "B waits while A's lease runs"

        # B takes over once A's lease has run out, and drives the release into the last wave's bake.
        when.rollout_reaches(release, stage="Bake", wave=2, within=60, what="B driving the release on")
        assert reconciled(b, "release"), b.tail()
        assert stopped(a), "A is still frozen: B did all of this alone"

        # A wakes up: for a moment both lead (A by priority, B until it reads A's keep-alive).
        b_log = b.log_path.stat().st_size
        woken = time.monotonic()
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGCONT)
        status = then.phase_is(release, "Succeeded", within=60)
        eventually(lambda: "Pausing operations" in b.log_path.read_bytes()[b_log:].decode(errors="replace"),
                   timeout=30, what="B stepping back for A, which outranks it")
        then.canary_gone(shop)
        time.sleep(1)  # the watcher's samples after the end

    after = [s for s in watch.samples if s.at >= woken]
    assert after, "the watcher saw the cluster after A woke"
    totals = deployments.totals()
    assert totals and totals[-1][1] == REPLICAS, deployments.changes[-5:]
    short = [(round(at - woken, 2), asked, ready) for at, asked, ready in totals
             if min(asked, ready) < REPLICAS - MAX_UNAVAILABLE]
    assert not short, f"pods asked for or Ready below {REPLICAS - MAX_UNAVAILABLE} (s after A woke, asked, Ready): " \
        f"{short[:8]}"
    lows = [s for s in watch.samples if s.canary + s.stable < REPLICAS - MAX_UNAVAILABLE]
    assert not lows, f"Ready pods below {REPLICAS - MAX_UNAVAILABLE} in the samples: {lows[:5]}"
    above = canary_above_bound(watch.samples)
    assert not above, f"the canary above its wave's bound: {above[:5]}"
    assert [h["wave"] for h in status["history"] if h["reason"] == "WaveStarted"] == [0, 1, 2], \
        f"each wave entered once: {status['history']}"
    assert "stale decision" in a.log_path.read_text(errors="replace"), "A's stale decision refused, not lost by luck"
    assert shop.image() == "registry.example/shop:2.0.0" and shop.ready(shop.name) == REPLICAS
