"""bench/peers: the same bad and healthy releases under Argo Rollouts and under guarded-rollouts.

On the test bed (the traffic simulator and Prometheus), every case in a namespace of its own with the demo's
shop (10 pods, 300 req/s, 5% of requests order, 0.5% fail):

* releases: orders -99%, orders -30%, errors x10 (the simulator's annotations on the new pods), and a healthy
  one (a new image, nothing else), repeated for the false-rollback rate;
* Argo Rollouts (its controller built by hack/argo-rollouts.sh, run as a local process): a basic canary, no
  traffic router, so setWeight steps are shares of pods (10% = 1 pod, 20%, 50%, then 100%), a pause after
  each, and a background AnalysisTemplate with a Prometheus provider that judges the canary's orders per
  request against the stable's (>= 0.8) and its errors per request against the stable's (<= 2x). Two
  configurations: Argo's documented example (interval 5m, failureLimit 3, a 5m range, pauses 10m), capped
  at --documented-cap minutes, and a tuned one (interval 30s, failureLimit 1, a 2m range, pauses 2m);
* guarded-rollouts (our operator, started as the tests start it, from operator/ as committed at HEAD) with the
  demo's waves and analysis, and guarded-detect-<drop>pct: the same with power before promotion (--detect).

Per case: detection time after the first bad pod Ready, orders lost on the new pods (expected at the base
ratio minus taken, from Prometheus), the step or wave reached, and the outcome. Cases run side by side.
Writes bench/results/peers.json and peers.md. `make bench-peers` (the default test bed, under its lock);
GUARDED_TESTBED_DIR and the GUARDED_*_PORT variables point it at a test bed of its own. See docs/peers.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from guarded.api.stages import phase_in

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "hack"))

from demo import demo_shop, image, release, waves  # noqa: E402

from operator_process import OperatorProcess, end  # noqa: E402
from testbed import Cluster, connect  # noqa: E402
from traffic import delete_namespace, first_ready, lost_orders, prom, shop_with_traffic  # noqa: E402
from waiting import eventually  # noqa: E402

ARGO = ("argoproj.io", "v1alpha1")
RELEASES: dict[str, dict[str, str]] = {
    "orders-99pct": {"order_ratio": "0.0005"},
    "orders-30pct": {"order_ratio": "0.035"},
    "errors-x10": {"error_ratio": "0.05"},
    "healthy": {},
}
STABLE, NEW = "1.0.0", "2.0.0"
WEIGHTS = (10, 20, 50)  # then 100%; 10 pods: 1, 2, 5, 10 on the new version, as the demo's waves
DEMO_BAKE = 15


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArgoConfig:
    name: str
    interval: str
    failure_limit: int
    window: str
    pause: str


DOCUMENTED = ArgoConfig(name="argo-documented", interval="5m", failure_limit=3, window="5m", pause="10m")
TUNED = ArgoConfig(name="argo-tuned", interval="30s", failure_limit=1, window="2m", pause="2m")
GUARDED = "guarded"
# The demo's settings plus power before promotion (docs/analysis.md): the wave before the last holds until a drop
# in orders by --detect (0.2: 20%) would have been caught with 95% power. Not the demo's; rows of their own,
# guarded-detect-<drop>pct.
GUARDED_DETECT = "guarded-detect"
DETECT_DEADLINE = "25m"


def log(message: str) -> None:
    print(f"[peers {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- Argo's objects (pure builders) --

def ratio_query(namespace: str, numerator: str, window: str) -> str:
    """The canary's numerator per request over the stable's; NaN while either side has no data yet."""
    def per_request(hash_arg: str) -> str:
        sel = f'namespace="{namespace}",pod=~"shop-{{{{args.{hash_arg}}}}}-.*"'
        return (f"(sum(increase({numerator.replace('SEL', sel)}[{window}])) / "
                f"sum(increase(http_requests_total{{{sel}}}[{window}])))")
    return f"({per_request('canary-hash')} / {per_request('stable-hash')}) or on() vector(NaN)"


def analysis_template(config: ArgoConfig, namespace: str, prometheus_url: str) -> dict[str, Any]:
    def metric(name: str, numerator: str, condition: str) -> dict[str, Any]:
        return {"name": name, "interval": config.interval, "failureLimit": config.failure_limit,
                # No data yet (a canary not yet scraped) is no evidence: it passes, as Argo users write it.
                "successCondition": f"isNaN(result[0]) || result[0] {condition}",
                "provider": {"prometheus": {"address": prometheus_url,
                                            "query": ratio_query(namespace, numerator, config.window)}}}
    return {"apiVersion": "/".join(ARGO), "kind": "AnalysisTemplate", "metadata": {"name": "shop-health"},
            "spec": {"args": [{"name": "canary-hash"}, {"name": "stable-hash"}], "metrics": [
                metric("orders-per-request", "orders_total{SEL}", ">= 0.8"),
                metric("errors-per-request", 'http_requests_total{SEL,code=~"5.."}', "<= 2")]}}


def argo_rollout(config: ArgoConfig, template: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for weight in WEIGHTS:
        steps += [{"setWeight": weight}, {"pause": {"duration": config.pause}}]
    return {"apiVersion": "/".join(ARGO), "kind": "Rollout", "metadata": {"name": "shop"},
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "shop"}}, "template": template,
                     "strategy": {"canary": {"steps": steps, "analysis": {
                         "templates": [{"templateName": "shop-health"}],
                         "args": [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                                  {"name": "stable-hash", "valueFrom": {"podTemplateHashValue": "Stable"}}]}}}}}


def step_weight(index: int | None) -> str:
    """Where a canary stood at status.currentStepIndex: the setWeight step in force."""
    if index is None:
        return "-"
    weight = 0
    for i, w in enumerate(WEIGHTS):
        if index >= 2 * i:
            weight = w
    return f"step {index} ({weight}%)" if index < 2 * len(WEIGHTS) else f"step {index} (100%)"


def new_template(template: dict[str, Any], behaviour: dict[str, str]) -> dict[str, Any]:
    out = json.loads(json.dumps(template))
    out["spec"]["containers"][0]["image"] = image(NEW)
    for key, value in behaviour.items():
        out["metadata"]["annotations"][f"sim.guarded.dev/{key.replace('_', '-')}"] = value
    return out


# -- Argo's controller as a local process --

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ArgoController:
    def __init__(self, cluster: Cluster, directory: Path) -> None:
        self.cluster, self.directory = cluster, directory
        self.log_path = Path(tempfile.mkdtemp(prefix="argo-rollouts-")) / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        for crd in sorted((self.directory / "crds").glob("*.yaml")):
            # Server-side: the Rollout CRD is too large for the last-applied annotation.
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        # Right after creation a CRD has no conditions yet, which `kubectl wait` takes for an error.
        eventually(lambda: self.cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=30s", "crd/rollouts.argoproj.io",
            "crd/analysistemplates.argoproj.io", "crd/analysisruns.argoproj.io", check=False).returncode == 0,
            timeout=90, interval=1, what="Argo's CRDs Established")

    def start(self) -> None:
        health = _free_port()
        args = [str(self.directory / "rollouts-controller"), "--kubeconfig", self.cluster.kubeconfig,
                "--leader-elect=false", "--metricsPort", str(_free_port()), "--healthzPort", str(health),
                "--loglevel", "info"]
        self.proc = subprocess.Popen(args, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
                                     env=dict(os.environ, KUBECONFIG=self.cluster.kubeconfig))
        time.sleep(3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"rollouts-controller exited with {self.proc.returncode}:\n{self.tail()}")
        log(f"argo rollouts-controller running (pid {self.proc.pid}, log {self.log_path})")

    def stop(self) -> None:
        end(self.proc)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def argo_dir() -> Path:
    out = subprocess.run(["bash", str(ROOT / "hack" / "argo-rollouts.sh")], check=True, capture_output=True,
                         text=True, timeout=7200)
    return Path(out.stdout.strip().splitlines()[-1])


# -- one case per namespace --

def own_cluster(cluster: Cluster) -> Cluster:
    """A copy with API clients of its own: each case runs on a thread."""
    return dataclasses.replace(cluster, _clients={})


def argo_case(cluster: Cluster, config: ArgoConfig, release_name: str, cap: float) -> dict[str, Any]:
    cluster = own_cluster(cluster)
    namespace = f"peers-{config.name.removeprefix('argo-')[:4]}-{secrets.token_hex(3)}"
    core = kubernetes.client.CoreV1Api(cluster.api())
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    apps = kubernetes.client.AppsV1Api(cluster.api())
    core.create_namespace({"metadata": {"name": namespace, "labels": {"guarded.dev/test": "true"}}})  # type: ignore[arg-type]
    assert cluster.prometheus_url is not None
    custom.create_namespaced_custom_object(*ARGO, namespace, "analysistemplates",
                                           analysis_template(config, namespace, cluster.prometheus_url))
    template = demo_shop()["spec"]["template"]
    custom.create_namespaced_custom_object(*ARGO, namespace, "rollouts", argo_rollout(config, template))

    def rollout() -> dict[str, Any]:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(*ARGO, namespace, "rollouts", "shop")  # type: ignore[assignment]
        return obj

    def status() -> dict[str, Any]:
        return rollout().get("status") or {}

    eventually(lambda: status().get("phase") == "Healthy" and status().get("availableReplicas") == 10,
               timeout=180, interval=1, what=f"{namespace}: the first revision of the Rollout Healthy")
    eventually(lambda: prom(cluster, f'sum(increase(http_requests_total{{namespace="{namespace}"}}[20s]))') > 3000,
               timeout=90, what=f"{namespace}: 20 s of traffic in Prometheus")
    stable_hash = status()["stableRS"]
    custom.patch_namespaced_custom_object(*ARGO, namespace, "rollouts", "shop",
                                          {"spec": {"template": new_template(template, RELEASES[release_name])}})
    canary_hash = eventually(lambda: (h := status().get("currentPodHash")) != stable_hash and h,
                             timeout=60, interval=0.2, what=f"{namespace}: the canary's pod hash")

    def canary_ready() -> bool:
        try:
            rs = apps.read_namespaced_replica_set(f"shop-{canary_hash}", namespace)
        except ApiException:
            return False
        return rs.status is not None and (rs.status.ready_replicas or 0) >= 1
    eventually(canary_ready, timeout=120, interval=0.1, what=f"{namespace}: the first new pod Ready")
    ready_at = time.time()
    log(f"{config.name} {release_name} in {namespace}: first new pod Ready")
    detected_at = done_at = None
    step: int | None = None  # Argo resets currentStepIndex when it aborts: keep the last one before
    outcome, message = f"not decided within {cap / 60:.0f} min", ""
    while time.time() < ready_at + cap:
        st = status()
        if not st.get("abort"):
            step = st.get("currentStepIndex", step)
        elif detected_at is None:
            detected_at, message = time.time(), st.get("message") or ""
            log(f"{config.name} {release_name}: aborted {detected_at - ready_at:.1f} s after the first new pod")
        if detected_at is not None:
            rs = apps.read_namespaced_replica_set(f"shop-{canary_hash}", namespace)
            if rs.status is not None and not rs.status.replicas and st.get("availableReplicas") == 10:
                done_at, outcome = time.time(), "aborted (rolled back)"
                break
        elif st.get("phase") == "Healthy" and st.get("stableRS") == canary_hash:
            done_at, outcome = time.time(), "promoted"
            break
        time.sleep(0.5)
    end = done_at or time.time()
    time.sleep(4)  # the last scrapes of the new pods
    lost = lost_orders(cluster, namespace, f"shop-{canary_hash}-.*", ready_at - 1, end + 2)
    runs: list[dict[str, Any]] = custom.list_namespaced_custom_object(  # type: ignore[index]
        *ARGO, namespace, "analysisruns")["items"]
    evidence = [{"metric": m["name"], "phase": m.get("phase"), "failed": m.get("failed", 0),
                 "last": (m.get("measurements") or [{}])[-1].get("value")}
                for r in runs for m in (r.get("status") or {}).get("metricResults", [])]
    delete_namespace(cluster, namespace)
    return {"system": config.name, "release": release_name, "namespace": namespace, "outcome": outcome,
            "cap_minutes": round(cap / 60, 1),
            "detect_seconds": round(detected_at - ready_at, 1) if detected_at else None,
            "end_seconds": round(end - ready_at, 1), "reached": step_weight(step),
            "message": message[:300], "analysis": evidence, **lost}


def committed_operator() -> tuple[str, Path]:
    """operator/ as committed at HEAD, exported apart: the checkout is shared, and the guarded cases must run one
    commit's code, not whatever edits are under way. Returns the commit and the directory for PYTHONPATH."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    where = Path(tempfile.mkdtemp(prefix=f"peers-operator-{commit}-"))
    archive = subprocess.run(["git", "archive", "HEAD", "operator"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return commit, where / "operator"


def guarded_case(cluster: Cluster, release_name: str, cap: float, detect: float | None = None, *,
                 operator: str = "") -> dict[str, Any]:
    cluster = own_cluster(cluster)
    shop, namespace = shop_with_traffic(cluster, prefix="peers-grd", deployment=demo_shop())
    behaviour = RELEASES[release_name]
    body = release("release", NEW, waves(DEMO_BAKE), f"bench/peers: {release_name}", behaviour or None)
    system = GUARDED
    if detect is not None:
        body["spec"]["analysis"] = {**body["spec"]["analysis"], "detect": [{"metric": "orders", "degradation": detect}]}
        # The hold before the last wave gathers the evidence a 20% drop would show: about 14 minutes of the 50%
        # wave at the demo's traffic (docs/judges.md), past the default progressDeadline of 10m, after which a
        # hold that is not powered rolls back as inconclusive. A service with this traffic needs a longer one.
        body["spec"]["progressDeadline"] = DETECT_DEADLINE
        system = f"{GUARDED_DETECT}-{round(detect * 100)}pct"
    shop.create_rollout(body)
    ready_at = first_ready(shop, "shop-canary")
    log(f"{system} {release_name} in {namespace}: first new pod Ready")

    def finished() -> dict[str, Any] | None:
        st = shop.status("release")
        phase = phase_in(st)
        return st if phase is not None and phase.terminal else None
    try:
        st = eventually(finished, timeout=cap, interval=0.3, what="the rollout to end")
    except AssertionError:
        st = shop.status("release")
    end = time.time()
    time.sleep(4)
    lost = lost_orders(cluster, namespace, "shop-canary-.*" if st.get("phase") == "RolledBack" else "shop-.*",
                       ready_at - 1, end + 2)
    back = next((h for h in st.get("history", []) if h["reason"] == "RollingBack"), None)
    detected = datetime.fromisoformat(back["time"].replace("Z", "+00:00")).timestamp() if back else None
    delete_namespace(cluster, namespace)
    wave = back.get("wave") if back else st.get("wave")  # promoted: the last wave
    outcome = {"RolledBack": "rolled back", "Succeeded": "promoted"}.get(st.get("phase", ""), st.get("phase", "?"))
    return {"system": system, "operator": operator, "release": release_name, "namespace": namespace, "outcome": outcome,
            "cap_minutes": round(cap / 60, 1),
            "detect_seconds": round(detected - ready_at, 1) if detected else None,
            "end_seconds": round(end - ready_at, 1),
            "reached": f"wave {wave + 1}" if isinstance(wave, int) else "-",
            "message": (back or {}).get("message", "")[:300], **lost}


# -- the bench --

def summarize(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    def label(case: dict[str, Any]) -> str:  # a guarded system is one per operator code
        return f"{case['system']} @ {case['operator']}" if case.get("operator") else case["system"]
    for system in dict.fromkeys([DOCUMENTED.name, TUNED.name, *sorted(map(label, cases))]):
        for name in RELEASES:
            runs = [c for c in cases if label(c) == system and c["release"] == name]
            if not runs:
                continue
            detect = [r["detect_seconds"] for r in runs if r["detect_seconds"] is not None]
            row: dict[str, Any] = {"system": system, "release": name, "runs": len(runs),
                                   "outcomes": dict(sorted({o: sum(r["outcome"] == o for r in runs)
                                                            for o in {r["outcome"] for r in runs}}.items())),
                                   "reached": sorted({r["reached"] for r in runs})}
            if name == "healthy":
                rolled = sum(r["detect_seconds"] is not None for r in runs)
                row["false_rollbacks"] = f"{rolled}/{len(runs)}"
            else:
                row["median_detect_seconds"] = round(statistics.median(detect), 1) if detect else None
                missed = [r for r in runs if r["detect_seconds"] is None]
                promoted = [r["end_seconds"] for r in missed if r["outcome"] == "promoted"]
                capped = [r["cap_minutes"] for r in missed if r["outcome"] != "promoted"]
                row["not_detected"] = ([f"{len(promoted)} promoted undetected, {min(promoted):g}-{max(promoted):g} s"]
                                       if promoted else []) + [f"not detected within {c:g} min" for c in capped]
                row["median_orders_lost"] = round(statistics.median(r["orders_lost"] for r in runs), 1)
            row["median_end_seconds"] = round(statistics.median(r["end_seconds"] for r in runs), 1)
            rows.append(row)
    return rows


def table(results: dict[str, Any]) -> str:
    lines = ["| system | release | runs | outcome | detected after first bad pod Ready (s, median) | "
             "orders lost (median) | reached | ended after (s, median) | false rollbacks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["summary"]:
        outcomes = ", ".join(f"{n} {o}" for o, n in r["outcomes"].items())
        detect = r.get("median_detect_seconds")
        missed = "; ".join(r.get("not_detected", []))
        detect = f"{detect}{' (' + missed + ')' if missed else ''}" if detect is not None else missed
        lines.append(f"| {r['system']} | {r['release']} | {r['runs']} | {outcomes} | "
                     f"{'-' if r['release'] == 'healthy' else detect} | "
                     f"{r.get('median_orders_lost', '-')} | {', '.join(r['reached'])} | {r['median_end_seconds']} | "
                     f"{r.get('false_rollbacks', '-')} |")
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarize(results["cases"])
    (out / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    more = f", cases added by runs at {', '.join(results['appended'])}" if results.get("appended") else ""
    head = f"# bench/peers\n\nRun {results['when']}{more} on the local test bed ({results['notes']}).\n\n"
    broke = "".join(f"\nBroke (not counted): {f['case']}: {f['error'][:200]}\n" for f in results["failed"])
    (out / "peers.md").write_text(head + table(results) + broke)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=f"{DOCUMENTED.name},{TUNED.name},{GUARDED},{GUARDED_DETECT}")
    parser.add_argument("--releases", default=",".join(RELEASES))
    parser.add_argument("--healthy", type=int, default=10, help="healthy releases per system")
    parser.add_argument("--detect", default="0.2,0.3", help="guarded-detect: drops in orders to power, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each bad release per system")
    parser.add_argument("--append", action="store_true", help="add to the cases already in --out/peers.json")
    parser.add_argument("--documented-healthy", type=int, default=5, help="healthy releases, documented config")
    parser.add_argument("--documented-cap", type=float, default=40, help="minutes a documented-config case may run")
    parser.add_argument("--cap", type=float, default=15, help="minutes any other case may run")
    parser.add_argument("--parallel", type=int, default=20, help="cases at once")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    systems, releases = args.systems.split(","), args.releases.split(",")

    cluster = connect()
    # Argo's controller is built (minutes, the first time) and run only when an Argo system is asked for.
    argo = ArgoController(cluster, argo_dir()) if {DOCUMENTED.name, TUNED.name} & set(systems) else None
    if argo is not None:
        argo.install()
    code, source = committed_operator()
    operator = OperatorProcess(cluster, env={"PYTHONPATH": str(source)})
    operator.install()
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for name in releases:
        for i in range(args.healthy if name == "healthy" else args.repeat):
            for config in (DOCUMENTED, TUNED):
                if config.name in systems and (config is TUNED or name != "healthy" or i < args.documented_healthy):
                    cap = 60 * (args.documented_cap if config is DOCUMENTED else args.cap)
                    jobs.append((f"{config.name}/{name}", functools.partial(argo_case, cluster, config, name, cap)))
            if GUARDED in systems:
                job = functools.partial(guarded_case, cluster, name, 60 * args.cap, operator=code)
                jobs.append((f"{GUARDED}/{name}", job))
            for drop in map(float, args.detect.split(",") if GUARDED_DETECT in systems else []):
                job = functools.partial(guarded_case, cluster, name, 60 * args.cap, drop, operator=code)
                jobs.append((f"{GUARDED_DETECT}-{drop}/{name}", job))
    jobs.sort(key=lambda j: not j[0].startswith(DOCUMENTED.name))  # the long ones first
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "cases": [], "failed": [],
        "argo_rollouts": argo and (subprocess.run([str(argo.directory / "rollouts-controller"), "--version"],
                                                  capture_output=True, text=True, timeout=30).stdout.strip()
                                   or argo.directory.name),
        "notes": (f"10 pods, 300 req/s, 5% order, 0.5% errors; Argo steps setWeight {', '.join(map(str, WEIGHTS))} "
                  f"then 100 (pod shares, no traffic router); documented: {DOCUMENTED}, capped at "
                  f"{args.documented_cap:.0f} min; tuned: {TUNED}; guarded: the demo's waves (1 pod, 20%, 50%, 100%, "
                  f"{DEMO_BAKE} s bakes) and analysis; guarded-detect-<d>pct: the same "
                  "with detect [{metric: orders, degradation: <d>}]"),
        "releases": RELEASES}
    if args.append and (args.out / "peers.json").exists():
        before = json.loads((args.out / "peers.json").read_text())
        notes = before["notes"]
        if notes != results["notes"]:
            notes += f"; later runs: {results['notes']}"
        results.update(when=before["when"], cases=before["cases"], failed=before["failed"], notes=notes)
        results.setdefault("appended", []).extend([*before.get("appended", []), datetime.now(UTC).isoformat(
            timespec="seconds")])
    lock = threading.Lock()

    def run(label: str, job: Callable[[], dict[str, Any]]) -> None:
        try:
            case = job()
        except Exception as exc:  # a case that breaks is reported, the others go on
            log(f"{label} failed: {exc!r}"[:800])
            with lock:
                results["failed"].append({"case": label, "error": repr(exc)[:800]})
            return
        log(f"{label}: {case['outcome']}, detected {case['detect_seconds']} s, lost {case['orders_lost']}, "
            f"{case['reached']}")
        with lock:
            results["cases"].append(case)
            write(args.out, results)

    if argo is not None:
        argo.start()
    operator.start()
    try:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for label, job in jobs:
                pool.submit(run, label, job)
                time.sleep(2)  # stagger the shops' start
    finally:
        operator.stop()
        if argo is not None:
            argo.stop()
            log(f"the Argo controller's log: {argo.log_path}")
        log(f"the operator's log: {operator.log_path}")
    write(args.out, results)
    print(table(results))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
