"""bench/chaos: rollouts on the test bed while the machinery around them breaks, judged from the outside.

Several rollouts run at once, each in a namespace of its own (`chaos-<kind>-<n>-<hex>`, a simulated shop of
4 pods): healthy ones and bad ones (the simulator's annotations: orders collapse) under analysis, and
healthy ones that meet a manual gate (promoted after a while), a pause (resumed), an abort, or a spec edit
mid-rollout (a new image: the canary retires, the new revision rolls out). Meanwhile, at moments drawn from
a seeded random generator:

* phase 1, one operator: SIGKILL and restart (every 1-3 s of uptime), and among the kills the API server
  restarted (hack/testbed.sh apiserver restart), etcd restarted (etcd restart), and the operator cut from the
  API server for 10-40 s (a partition: it talks to the API server through a loopback proxy, bench/
  chaos_proxy.py, that stops passing bytes); beside them Prometheus stopped for 5-15 s and started again, or
  answering slowly (its proxy delays each answer 2-8 s, past the operator's 5 s timeout at times) or
  resetting every connection, for 10-30 s;
* phase 2, two peered replicas (--peering): the active one SIGSTOPped for longer than its lease, so that the
  other takes over, then SIGCONT (both believe they lead for a moment);
* throughout: conflicting writes, another client annotating the rollout, the canary and the target.

A watcher (bench/chaos_watch.py) records every change of the Deployments and rollouts; each namespace is
judged once its rollout has ended and been deleted (nothing may be left behind). Results: bench/results/
chaos.json. Needs the test bed alone (it runs its own operators): make bench-chaos. See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import kubernetes
import requests
import yaml
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from chaos_proxy import Proxy  # noqa: E402
from chaos_watch import ClusterWatch, Expect, judge  # noqa: E402

from operator_process import OperatorProcess  # noqa: E402
from rollouts import ANALYSIS, GROUP, PLURAL, VERSION, Shop, behaviour_change, guarded_rollout, simulated_shop  # noqa: E402
from testbed import Cluster, connect  # noqa: E402
from traffic import prom, prom_range  # noqa: E402

T = TypeVar("T")
KINDS = ("healthy", "bad", "gated", "paused", "aborted", "edited", "approved")
REPLICAS = 4
OLD, NEW, NEWER = "registry.example/shop:1.0.0", "registry.example/shop:2.0.0", "registry.example/shop:3.0.0"
WAVES = [{"replicas": 1, "bake": "4s"}, {"weight": 50, "bake": "4s"}, {"weight": 100, "bake": "3s"}]
TERMINAL = {"Succeeded", "RolledBack", "Failed"}
PEERING = ROOT / "manifests" / "install" / "peering.yaml"
LEASE = 5  # seconds a frozen replica's keep-alive counts (--peering-lifetime)
TESTBED = ROOT / "hack" / "testbed.sh"


def log(message: str) -> None:
    print(f"[chaos {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def transient(exc: BaseException) -> bool:
    """A failure the chaos itself causes: the API server restarting, a webhook whose operator is down."""
    if isinstance(exc, ApiException):
        # The identity policy refuses a rollout the operator's webhook did not stamp: the API server's own rule
        # while the operator is down (its webhook configuration removed between two operators).
        return exc.status in (0, 429, 500, 502, 503, 504) or "failed calling webhook" in str(exc.body) \
            or (exc.status == 403 and "stamped by the guarded-rollouts admission webhook" in str(exc.body))
    return isinstance(exc, (OSError, kubernetes.client.exceptions.OpenApiException)) or \
        type(exc).__module__.startswith("urllib3")


def retried(call: Callable[[], T], *, timeout: float = 180) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def created(call: Callable[[], object]) -> None:
    """A create, retried through transient failures; AlreadyExists is the answer an earlier try lost."""
    try:
        retried(call)
    except ApiException as exc:
        if exc.status != 409:
            raise


def deleted(call: Callable[[], object]) -> None:
    """A delete, retried through transient failures; NotFound is the answer an earlier try lost."""
    try:
        retried(call)
    except ApiException as exc:
        if exc.status != 404:
            raise


def until(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5) -> T:
    """`probe()` until it returns something truthy, through transient failures; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except Exception as exc:
            if not transient(exc):
                raise
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Bench:
    """The shared state: the cluster, the operator(s), the watcher, what was done and when."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: Cluster = connect()
        self.core = kubernetes.client.CoreV1Api(self.cluster.api())
        self.custom = kubernetes.client.CustomObjectsApi(self.cluster.api())
        # The watcher's own client: its long watches do not take the connections of the scenarios' calls.
        self.watch = ClusterWatch(kubernetes.config.new_client_from_config(
            config_file=self.cluster.kubeconfig, context=self.cluster.context_for("admin"))).start()
        # The operator reaches the API server and Prometheus through proxies the faults can break.
        self.api_proxy, self.prometheus_proxy, self.operator_cluster = proxied(self.cluster)
        self.operator = OperatorProcess(self.operator_cluster)
        self.replicas: list[OperatorProcess] = []
        self.faults: list[dict[str, Any]] = []      # {kind, start, end, ...}, times from time.time()
        self.results: list[dict[str, Any]] = []     # one per scenario
        self.active: set[str] = set()               # namespaces with a rollout in flight
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def fault(self, kind: str, start: float, **extra: Any) -> None:
        with self.lock:
            self.faults.append({"kind": kind, "start": start, "end": time.time(), **extra})

    def fault_spans(self) -> list[tuple[float, float]]:
        with self.lock:
            return [(f["start"], f["end"]) for f in self.faults if f["kind"] != "conflicting-write"]


def proxied(cluster: Cluster) -> tuple[Proxy, Proxy, Cluster]:
    """Proxies to the API server (every cluster of the kubeconfig names it) and to Prometheus, and the cluster
    as the operator sees it through them: a kubeconfig of its own, the proxy's Prometheus URL."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = urlparse(config["clusters"][0]["cluster"]["server"])
    api = Proxy(server.hostname or "127.0.0.1", server.port or 443).start()
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://{api.url_host}"
    path = Path(tempfile.mkdtemp(prefix="guarded-chaos-")) / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert cluster.prometheus_url is not None, "bench/chaos needs the test bed's Prometheus"
    prom_url = urlparse(cluster.prometheus_url)
    prometheus = Proxy(prom_url.hostname or "127.0.0.1", prom_url.port or 80).start()
    return api, prometheus, dataclasses.replace(cluster, kubeconfig=str(path),
                                                 prometheus_url=f"http://{prometheus.url_host}", _clients={})


# -- scenarios: one rollout each, in a namespace of its own ------------------------------------------------

def request(shop: Shop, action: str) -> None:
    """A manual request as the plugin makes it; returns once the operator has answered it."""
    rid = secrets.token_hex(4)
    retried(lambda: shop.custom.patch_namespaced_custom_object(
        GROUP, VERSION, shop.namespace, PLURAL, "release",
        {"metadata": {"annotations": {f"{GROUP}/request": json.dumps({"id": rid, "action": action})}}}))
    until(lambda: (shop.status("release").get("lastRequest") or {}).get("id") == rid, timeout=300,
          what=f"the {action} request answered")


def approval_setup(bench: Bench, namespace: str) -> str:
    """The engineers may approve in the namespace, and a policy of it asks for one approval; the policy's name."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(bench.cluster.api())
    binding = {"metadata": {"name": "engineers-edit"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "engineers"}]}
    policy = f"chaos-{namespace}"[:63]
    created(lambda: rbac.create_namespaced_role_binding(namespace, binding))
    created(lambda: bench.custom.create_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": policy},
        "spec": {"selector": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                 "rules": {"requiredApprovals": 1}}}))
    return policy


def approve(bench: Bench, shop: Shop) -> None:
    """bob approves the rollout's current revision (again, when an answer was lost: it must count once)."""
    bob = kubernetes.client.CustomObjectsApi(bench.cluster.api("bob"))
    revision = int(retried(lambda: shop.rollout("release"))["metadata"]["generation"])
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutApproval", "metadata": {"generateName": "release-bob-"},
            "spec": {"rollout": "release", "revision": revision}}

    def create() -> bool:
        try:
            bob.create_namespaced_custom_object(GROUP, VERSION, shop.namespace, "rolloutapprovals", body)
        except ApiException as exc:
            if exc.status == 403 and "cannot create resource" in str(exc.body):
                return False  # RBAC has not caught up with the binding yet
            raise
        return True
    until(create, timeout=180, what="bob's approval created")


def approvals_kept(final: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """bob's approval counted (not lost), once (no approver counted twice, no approval recorded twice)."""
    counted = [a["approver"] for a in final.get("approvals") or [] if a.get("counted")]
    recorded = Counter(h["message"] for h in history if h["reason"] == "ApprovalCounted")
    out = []
    if counted.count("bob") != 1 or len(counted) != len(set(counted)):
        out.append({"invariant": "an approval counted once, none lost", "counted": counted})
    if any(n > 1 for n in recorded.values()):
        out.append({"invariant": "an approval recorded once", "recorded": dict(recorded)})
    return out


def run_scenario(bench: Bench, kind: str, index: int, rng: random.Random) -> dict[str, Any]:
    namespace = f"chaos-{kind}-{index}-{secrets.token_hex(2)}"
    created(lambda: bench.core.create_namespace({"metadata": {"name": namespace, "labels": {
        "guarded.dev/test": "true", "guarded.dev/chaos": "true"}}}))
    shop = Shop(bench.cluster, namespace)
    result: dict[str, Any] = {"kind": kind, "namespace": namespace, "violations": []}
    policy = None
    try:
        if kind == "approved":
            policy = approval_setup(bench, namespace)
        created(lambda: shop.apps.create_namespaced_deployment(namespace, simulated_shop(replicas=REPLICAS)))
        until(lambda: shop.ready("shop") == REPLICAS, timeout=180, what="the shop Ready")
        analysed = kind in ("healthy", "bad")
        if analysed:  # a baseline before the rollout: 20 s of traffic in Prometheus
            until(lambda: prom(bench.cluster, f'sum(increase(http_requests_total{{namespace="{namespace}"}}[20s]))')
                  > 3000, timeout=180, what="20 s of traffic in Prometheus")
        checked_from = time.time()
        waves = [dict(w) for w in WAVES]
        if kind == "gated":
            waves[1]["manualGate"] = True
        body = guarded_rollout("release", image=NEW, waves=waves, **({"analysis": ANALYSIS} if analysed else {}))
        if kind == "bad":
            body["spec"]["change"]["podTemplatePatch"] = behaviour_change(order_ratio="0.0005")
        with bench.lock:
            bench.active.add(namespace)
        created(lambda: shop.create_rollout(body))
        promoted = NEWER if kind == "edited" else NEW
        started = time.monotonic()

        def reached(*, wave: int = 0, stage: str | None = None) -> dict[str, Any] | None:
            st = shop.status("release")
            ok = (st.get("wave") or 0) >= wave and st.get("stage") in ((stage,) if stage else
                                                                       ("ScaleCanary", "ScaleStable", "Bake"))
            return st if ok or st.get("phase") in TERMINAL else None

        if kind == "approved":
            until(lambda: shop.status("release").get("phase") == "AwaitingApproval", timeout=300,
                  what="the rollout awaiting an approval")
            time.sleep(rng.uniform(1, 4))
            approve(bench, shop)
        elif kind == "gated":
            if until(lambda: reached(stage="Gate"), timeout=600, what="the gate").get("stage") == "Gate":
                time.sleep(rng.uniform(1, 6))
                request(shop, "promote")
        elif kind in ("paused", "aborted", "edited"):
            wave = rng.choice((0, 1))
            if until(lambda: reached(wave=wave), timeout=600, what="a wave").get("phase") not in TERMINAL:
                if kind == "paused":
                    request(shop, "pause")
                    time.sleep(rng.uniform(3, 8))
                    request(shop, "resume")
                elif kind == "aborted":
                    request(shop, "abort")
                else:
                    retried(lambda: shop.custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, "release",
                        {"spec": {"change": {"containers": [{"name": "app", "image": NEWER}]}}}))
        final = until(lambda: (st := shop.status("release")).get("phase") in TERMINAL and st, timeout=900,
                      what="the rollout to end")
        result.update(phase=final["phase"], seconds=round(time.monotonic() - started, 1),
                      rollback_reason=final.get("rollbackReason"))
        last = final.get("lastRequest") or {}
        aborted = kind == "aborted" and last.get("action") == "abort" and last.get("result") == "Accepted"
        phases = {"bad": ("RolledBack",), "aborted": ("RolledBack",) if aborted else ("Succeeded", "RolledBack")}
        image = retried(shop.image)
        checked_until = time.time()
        if final["phase"] not in phases.get(kind, ("Succeeded",)):
            result["forensics"] = forensics(bench, namespace, final, since=checked_from)
        result["violations"] += left_behind(bench, shop)
        time.sleep(1)  # the watcher's last events
        expect = Expect(kind=kind, replicas=REPLICAS, max_unavailable=0, waves=waves, bad=kind == "bad",
                        images=(OLD, promoted), phases=phases.get(kind, ("Succeeded",)),
                        checked_from=checked_from, checked_until=checked_until)
        violations, explained = judge(bench.watch.of(namespace), expect, bench.fault_spans(), final, image)
        result["violations"] += violations
        result["lags_explained_by_a_fault"] = explained
        recorded = bench.watch.of(namespace)
        result["changes_judged"] = sum(checked_from <= x.at <= checked_until for x in recorded.samples)
        result["history_entries"] = len(recorded.history)
        if kind == "approved":
            result["violations"] += approvals_kept(final, list(bench.watch.of(namespace).history.values()))
    except TimeoutError as exc:
        status = retried(lambda: shop.status("release"))
        result.update(phase=status.get("phase"), timed_out=str(exc))
        result["violations"].append({"invariant": "the rollout ends", "detail": str(exc),
                                     "status": json.dumps(status)[:1500]})
    finally:
        with bench.lock:
            bench.active.discard(namespace)
        if policy:
            deleted(lambda: bench.custom.delete_cluster_custom_object(GROUP, VERSION, "rolloutpolicies", policy))
        deleted(lambda: bench.core.delete_namespace(namespace, propagation_policy="Background"))
    for v in result["violations"]:
        v.setdefault("namespace", namespace)
    return result


def forensics(bench: Bench, namespace: str, final: dict[str, Any], *, since: float) -> dict[str, Any]:
    """What an unexpected outcome is judged by afterwards: the rollout's own account (the evidence of its
    judgements, its history) and the raw counters Prometheus holds for the namespace's pods (one sample a
    second, per pod and code), straight from Prometheus, not through the operator's proxy."""
    out: dict[str, Any] = {"status": {k: final.get(k) for k in ("phase", "rollbackReason", "message", "analysis",
                                                                  "history", "wave", "stage")}}
    end = time.time()
    try:
        for metric in ("http_requests_total", "orders_total"):
            out[metric] = prom_range(bench.cluster, f'{metric}{{namespace="{namespace}"}}', since - 60, end, 1.0)
    except requests.RequestException as exc:
        out["prometheus_error"] = str(exc)
    return out


def left_behind(bench: Bench, shop: Shop) -> list[dict[str, Any]]:
    """Delete the rollout; once it is gone nothing of it may remain: no canary, no claim on the target, the
    target at its replica count, no object it owned."""
    uid = (retried(lambda: shop.rollout("release")) or {}).get("metadata", {}).get("uid")
    deleted(lambda: shop.custom.delete_namespaced_custom_object(GROUP, VERSION, shop.namespace, PLURAL, "release"))
    try:
        until(lambda: shop.rollout("release") is None, timeout=300, what="the deleted rollout gone")
        until(lambda: shop.deployment("shop-canary") is None and shop.ready("shop") == REPLICAS, timeout=120,
              what="no canary and the target Ready")
    except TimeoutError as exc:
        return [{"invariant": "nothing left behind after deletion", "detail": str(exc)}]
    target = retried(lambda: shop.deployment("shop"))
    out = []
    held = {k: v for k, v in (target.metadata.annotations or {}).items() if k.startswith(GROUP)}
    if held:
        out.append({"invariant": "nothing left behind after deletion", "target_annotations": held})
    if target.spec.replicas != REPLICAS:
        out.append({"invariant": "nothing left behind after deletion", "target_replicas": target.spec.replicas})
    owned = [f"{o.kind}/{o.metadata.name}" for lister in (shop.core.list_namespaced_config_map,
                                                          shop.core.list_namespaced_service,
                                                          shop.apps.list_namespaced_deployment)
             for o in retried(lambda lister=lister: lister(shop.namespace)).items
             if any(r.uid == uid for r in (o.metadata.owner_references or []))]
    if owned:
        out.append({"invariant": "nothing left behind after deletion", "owned": owned})
    return out


def scenarios(bench: Bench, slot: int) -> None:
    """One slot: scenarios one after another, until the faults are over."""
    rng = random.Random(bench.args.seed * 1000 + slot)
    n = 0
    while not bench.stopping.is_set():
        kind = bench.args.kinds[(slot + n * bench.args.slots) % len(bench.args.kinds)]
        index = slot + n * bench.args.slots
        n += 1
        try:
            result = run_scenario(bench, kind, index, rng)
        except Exception as exc:  # the bench's own failure: recorded, the slot goes on
            result = {"kind": kind, "phase": None, "error": f"{type(exc).__name__}: {exc}"[:500],
                      "violations": []}
        log(f"{kind} #{index}: {result.get('phase')} ({len(result['violations'])} violations)")
        with bench.lock:
            bench.results.append(result)


# -- faults ------------------------------------------------------------------------------------------------

def conflicting_writes(bench: Bench, rng: random.Random) -> None:
    """Another client annotating the rollout, the canary and the target while the operator works on them."""
    n = 0
    while not bench.stopping.is_set():
        time.sleep(rng.uniform(0.5, 2.5))
        with bench.lock:
            namespaces = sorted(bench.active)
        if not namespaces:
            continue
        namespace = rng.choice(namespaces)
        what = rng.choice(("rollout", "canary", "target"))
        n += 1
        patch = {"metadata": {"annotations": {"chaos.guarded.dev/poke": str(n)}}}
        start = time.time()
        try:
            if what == "rollout":
                bench.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "release", patch)
            else:
                name = "shop-canary" if what == "canary" else "shop"
                kubernetes.client.AppsV1Api(bench.cluster.api()).patch_namespaced_deployment(name, namespace, patch)
        except Exception:  # gone, or refused while the operator (its webhook) is down: not a write
            continue
        bench.fault("conflicting-write", start, target=what)


def kill(bench: Bench) -> None:
    start = time.time()
    bench.operator.kill()
    restarted = time.time()
    bench.operator.start()
    bench.fault("operator-sigkill", start, restarted=restarted, ready_seconds=round(time.time() - restarted, 2))


def prometheus_outage(bench: Bench, rng: random.Random) -> None:
    start = time.time()
    subprocess.run(["bash", str(TESTBED), "prometheus", "stop"], check=True, capture_output=True, timeout=60)
    time.sleep(rng.uniform(5, 15))
    restarted = time.time()
    subprocess.run(["bash", str(TESTBED), "prometheus", "start"], check=True, capture_output=True, timeout=120)
    bench.fault("prometheus-outage", start, restarted=restarted, ready_seconds=round(time.time() - restarted, 2))


def prometheus_slow(bench: Bench, rng: random.Random) -> None:
    """Prometheus up, but its answers late (2-8 s each: the operator gives up after 5 s at times) or every
    connection reset, for 10-30 s."""
    start = time.time()
    mode, delay = ("slow", rng.uniform(2, 8)) if rng.random() < 0.7 else ("reset", 0.0)
    bench.prometheus_proxy.set(mode, delay)
    time.sleep(rng.uniform(10, 30))
    bench.prometheus_proxy.set("open")
    bench.fault("prometheus-slow", start, mode=mode, delay_s=round(delay, 2))


def control_plane_restart(bench: Bench, what: str) -> None:
    """The API server, or etcd under it, restarted (hack/testbed.sh): back once the API server is ready."""
    start = time.time()
    subprocess.run(["bash", str(TESTBED), what, "restart"], check=True, capture_output=True, timeout=180)
    bench.fault(f"{what}-restart", start, ready_seconds=round(time.time() - start, 2))


def api_cut(bench: Bench, rng: random.Random) -> None:
    """The operator partitioned from the API server for 10-40 s, longer than its request timeouts (5 s to
    connect, 30 s to read): no byte moves on its connections; then they carry on, as a healed partition's."""
    start = time.time()
    bench.api_proxy.set("cut")
    time.sleep(rng.uniform(10, max(10.0, bench.args.cut_max)))
    bench.api_proxy.set("open")
    bench.fault("api-cut", start)


def prometheus_outages(bench: Bench, rng: random.Random, done: threading.Event) -> None:
    """Beside the kills (Prometheus is not the operator): every 10-40 s (--prometheus-every) an outage or a
    slow spell, in a shuffled order, until enough or phase 1 ends."""
    plan = ["outage"] * bench.args.prometheus + ["slow"] * bench.args.prometheus_slow
    rng.shuffle(plan)
    for what in plan:
        if done.wait(rng.uniform(bench.args.prometheus_every / 4, bench.args.prometheus_every)):
            return
        if what == "outage":
            prometheus_outage(bench, rng)
        else:
            prometheus_slow(bench, rng)


def phase_one(bench: Bench, rng: random.Random) -> None:
    """One operator: kills with API server restarts among them, and Prometheus outages beside."""
    done = threading.Event()
    outages = threading.Thread(target=prometheus_outages, args=(bench, random.Random(bench.args.seed + 2), done),
                               daemon=True)
    outages.start()
    plan = (["kill"] * bench.args.kills + ["apiserver"] * bench.args.apiserver + ["etcd"] * bench.args.etcd
            + ["cut"] * bench.args.cuts)
    rng.shuffle(plan)
    try:
        for i, what in enumerate(plan):
            time.sleep(rng.uniform(bench.args.uptime_min, bench.args.uptime_max))
            if what == "kill":
                kill(bench)
            elif what == "cut":
                api_cut(bench, rng)
            else:
                control_plane_restart(bench, what)
            if i % 20 == 0:
                log(f"phase 1: {i + 1}/{len(plan)} faults, {len(bench.results)} rollouts done")
        outages.join()  # the outages still planned, while the kills have stopped
        while len(bench.results) < bench.args.min_rollouts:  # enough rollouts judged (with or without faults)
            time.sleep(2)
    finally:
        done.set()


def phase_two(bench: Bench, rng: random.Random) -> None:
    """Two peered replicas: the active (older) one frozen past its lease, so the other takes over; then woken."""
    bench.cluster.kubectl("apply", "-f", str(PEERING))
    bench.operator.stop()
    a, b = (OperatorProcess(bench.operator_cluster, extra_args=["--peering", "--peering-lifetime", str(LEASE)],
                            env={"POD_ID": f"chaos-{name}"}) for name in ("a", "b"))
    bench.replicas = [a, b]
    try:
        a.start()
        b.start()
        for i in range(bench.args.stops):
            time.sleep(rng.uniform(3, 8))
            assert a.proc is not None
            start = time.time()
            os.kill(a.proc.pid, signal.SIGSTOP)
            time.sleep(LEASE + rng.uniform(1, 6))
            woken = time.time()
            os.kill(a.proc.pid, signal.SIGCONT)
            bench.fault("active-replica-sigstop", start, woken=woken, stopped_seconds=round(woken - start, 2))
            log(f"phase 2: {i + 1}/{bench.args.stops} freezes")
        time.sleep(3)
    finally:
        for proc in (a, b):
            if proc.proc is not None and proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)
            proc.stop()
        bench.cluster.kubectl("delete", "-f", str(PEERING), "--ignore-not-found")
        bench.operator.remove_webhooks()
        bench.operator.start()


# -- the report --------------------------------------------------------------------------------------------

def recovery(bench: Bench) -> dict[str, Any]:
    """Per fault kind: seconds from the end of the fault (the killed operator started again, Prometheus started
    again, the API server Ready again, the frozen replica woken) to the next change of any rollout's status (the
    next thing an operator wrote), and for the freezes the takeover while the active one slept."""
    changes = bench.watch.status_changes()
    per: dict[str, list[float]] = {}
    takeover: list[float] = []
    for f in bench.faults:
        if f["kind"] == "conflicting-write":
            continue
        since = f.get("restarted") or f.get("woken") or f["end"]
        after = [t - since for t in changes if t >= since]
        if after:
            per.setdefault(f["kind"], []).append(after[0])
        if f["kind"] == "active-replica-sigstop":
            during = [t - f["start"] for t in changes if f["start"] + LEASE <= t <= f["woken"]]
            if during:
                takeover.append(during[0])
    out = {kind: summary(v) for kind, v in sorted(per.items())}
    fresh = []  # Prometheus back: the first judgement whose data is fresh again (its freshSince after the start)
    for f in bench.faults:
        if f["kind"] == "prometheus-outage":
            after = [t - f["restarted"] for t, since in bench.watch.fresh if since >= f["restarted"] - 0.5]
            if after:
                fresh.append(min(after))
    if fresh:
        out["prometheus-outage"]["fresh_judgement_after_start"] = summary(fresh)
    ready = [f["ready_seconds"] for f in bench.faults if f["kind"] == "operator-sigkill"]
    if ready:
        out["operator-sigkill"]["restart_to_ready"] = summary(ready)
    if takeover:
        out.setdefault("active-replica-sigstop", {})["takeover_after_freeze"] = summary(takeover)
    return out


def summary(values: list[float]) -> dict[str, Any]:
    values = sorted(values)
    return {"n": len(values), "median_s": round(statistics.median(values), 2),
            "p95_s": round(values[min(len(values) - 1, int(0.95 * len(values)))], 2), "max_s": round(values[-1], 2)}


def report(bench: Bench, began: float, operator_logs: list[Path]) -> dict[str, Any]:
    violations = [v for r in bench.results for v in r["violations"]]
    by_phase: dict[str, Counter[str]] = {}
    for r in bench.results:
        by_phase.setdefault(r["kind"], Counter())[str(r.get("phase"))] += 1
    text = "".join(p.read_text(errors="replace") for p in operator_logs if p.exists())
    errors: Counter[str] = Counter()  # the exceptions the operators logged, by type (last line of each)
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("exception"):
            last = str(entry["exception"]).strip().splitlines()[-1]
            errors[f'{entry.get("event")}: {last.split(":")[0]}'] += 1
    return {
        "started": datetime.fromtimestamp(began, UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - began), "seed": bench.args.seed, "slots": bench.args.slots,
        "kill_cycles": sum(f["kind"] == "operator-sigkill" for f in bench.faults),
        "faults_by_kind": dict(Counter(f["kind"] for f in bench.faults)),
        "invariant_violations": len(violations),
        "rollouts": len(bench.results),
        "rollouts_by_kind_and_final_phase": {k: dict(v) for k, v in sorted(by_phase.items())},
        "recovery_seconds": recovery(bench),
        "lags_explained_by_a_fault": sum(r.get("lags_explained_by_a_fault", 0) for r in bench.results),
        "deployment_changes_judged": sum(r.get("changes_judged", 0) for r in bench.results),
        "history_entries_judged": sum(r.get("history_entries", 0) for r in bench.results),
        "watch_relists": bench.watch.restarts,
        "operator_log": {"lines": text.count("\n"), "exceptions_logged": dict(errors.most_common()),
                         "stale_decisions_refused": text.count("stale decision")},
        "bench_errors": [r["error"] for r in bench.results if r.get("error")],
        "violations": violations,
        "rollouts_detail": [{k: v for k, v in r.items() if k != "violations"} for r in bench.results],
    }


def attempt(step: Callable[[], object]) -> None:
    """A clean-up step that must not keep the report from being written."""
    try:
        step()
    except Exception as exc:
        log(f"clean-up step failed: {type(exc).__name__}: {exc}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--prometheus", type=int, default=10, help="Prometheus outages")
    parser.add_argument("--prometheus-slow", type=int, default=10,
                        help="spells of Prometheus answering slowly or resetting connections")
    parser.add_argument("--apiserver", type=int, default=10, help="API server restarts")
    parser.add_argument("--etcd", type=int, default=10, help="etcd restarts")
    parser.add_argument("--cuts", type=int, default=10, help="the operator cut from the API server")
    parser.add_argument("--cut-max", type=float, default=40, help="longest cut, seconds (the shortest is 10)")
    parser.add_argument("--prometheus-every", type=float, default=40,
                        help="most seconds between two Prometheus faults (the fewest: a quarter of it)")
    parser.add_argument("--stops", type=int, default=10, help="freezes of the active replica (phase 2)")
    parser.add_argument("--min-rollouts", type=int, default=0,
                        help="phase 1 lasts until this many rollouts have ended (0: until its faults are done); "
                        "with every fault count 0, a plain run of that many rollouts")
    parser.add_argument("--slots", type=int, default=5, help="rollouts in flight at once")
    parser.add_argument("--kinds", type=lambda v: v.split(","), default=list(KINDS),
                        help=f"the kinds of rollout, taken in turn (default: {','.join(KINDS)})")
    parser.add_argument("--uptime-min", type=float, default=1.0, help="seconds an operator runs before its kill")
    parser.add_argument("--uptime-max", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args()

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # a full connection pool is no news here
    bench = Bench(args)
    began = time.time()
    bench.operator.install()
    bench.operator.start()
    rng = random.Random(args.seed)
    threads = [threading.Thread(target=scenarios, args=(bench, slot), daemon=True) for slot in range(args.slots)]
    threads.append(threading.Thread(target=conflicting_writes, args=(bench, random.Random(args.seed + 1)),
                                    daemon=True))
    for t in threads:
        t.start()
    logs = [bench.operator.log_path]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # interrupted: the finally below stops the operators
    completed = False
    failure = None
    try:
        phase_one(bench, rng)
        if args.stops:
            phase_two(bench, rng)
            logs += [r.log_path for r in bench.replicas]
        completed = True
    except Exception as exc:  # a fault that could not be injected (or undone): reported, the run still judged
        failure = f"the faults stopped early: {type(exc).__name__}: {exc}"[:1000]
        log(failure)
    finally:
        bench.stopping.set()
        bench.api_proxy.set("open")
        bench.prometheus_proxy.set("open")
        if completed:
            log("faults over: the rollouts in flight finish")
            for t in threads:
                t.join(timeout=1200)
        bench.watch.stop()
        attempt(lambda: subprocess.run(["bash", str(TESTBED), "prometheus", "start"], check=False,
                                       capture_output=True, timeout=120))
        for proc in (bench.operator, *bench.replicas):
            if proc.proc is not None and proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)
                attempt(proc.stop)
        attempt(bench.operator.remove_webhooks)
    result = report(bench, began, logs)
    if failure:
        result["bench_errors"].append(failure)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("violations", "rollouts_detail")}, indent=2))
    return 0 if result["invariant_violations"] == 0 and not result["bench_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
