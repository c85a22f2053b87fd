"""bench/scale.py --soak SECONDS: N rollouts kept in flight for that long, the operator's memory sampled (issue 11:
bounded memory, no growth after warm-up).

Every rollout that ends (Succeeded, or RolledBack or Failed) gets a new release at once: spec.change's image
becomes registry.example/shop:2.0.<k>, a new revision that the operator starts from wave 1 (core/engine.py,
check_revision). Every 10 s the operator's /metrics give its resident memory and CPU seconds. Writes
bench/results/soak-<N>.json (the samples, the releases ended and their phases, the least-squares slope of RSS in
MiB per hour after --warmup seconds) and docs/images/soak-<N>.png (RSS over time). `make bench-soak`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import kubernetes
from scale_bed import (
    GROUP,
    PLURAL,
    ROOT,
    TERMINAL,
    VERSION,
    Bed,
    Watcher,
    image,
    log,
    per_interval,
    rollout_body,
    total,
)

SAMPLE_EVERY = 10.0


def slope_per_hour(samples: list[dict[str, float]], warmup: float) -> float | None:
    """Least-squares slope of RSS (MiB) against time after the warm-up, in MiB per hour."""
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        return None
    fit = statistics.linear_regression([s["t"] for s in after], [s["rss_mib"] for s in after])
    return round(fit.slope * 3600, 2)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    n, length = args.rollouts, args.soak
    samples: list[dict[str, float]] = []
    ended: dict[str, int] = {}  # phase -> releases that ended so
    counted: dict[str, str | None] = {}  # namespace -> the revision whose end was counted
    releases = 0
    with Bed(n) as bed:
        custom = kubernetes.client.CustomObjectsApi(bed.cluster.api())
        for ns in bed.namespaces:
            bed.create(ns, rollout_body(args.bake, args.interval))
        releases = n
        # The rollouts' phases from one watch, not a list of every rollout every 2 s (sessions 11-18's soaks did:
        # at N = 335 about 4.7 MB of JSON for the API server to encode each time, the bench's own load).
        watcher = Watcher(bed.cluster, bed.prefix)
        watcher.start()
        log(f"{n} rollouts created; soaking {length:.0f} s (warm-up {args.warmup:.0f} s)")
        om0 = bed.metrics()
        t0 = next_sample = time.time()
        cpu0 = total(om0, "process_cpu_seconds_total")
        phases: dict[str, str] = {}
        while (now := time.time()) < t0 + length:
            if now >= next_sample:
                om = bed.metrics()
                cpu = total(om, "process_cpu_seconds_total")
                rss = bed.memory()["rss"]
                sample = {"t": round(now - t0, 1), "rss_mib": round(rss, 2), "cpu_seconds": round(cpu - cpu0, 2)}
                if samples:
                    sample["cpu_share"] = round((sample["cpu_seconds"] - samples[-1]["cpu_seconds"])
                                                / max(sample["t"] - samples[-1]["t"], 1e-9), 3)
                samples.append(sample)
                next_sample += SAMPLE_EVERY
                if len(samples) % 30 == 1:
                    log(f"t={sample['t']:.0f} s: RSS {sample['rss_mib']} MiB, {sum(ended.values())} releases "
                        f"ended {ended}")
            for item in list(watcher.items.values()):
                ns = item["metadata"]["namespace"]
                if not ns.startswith(bed.prefix):
                    continue
                st = item.get("status") or {}
                phases[ns] = st.get("phase") or "None"
                if phases[ns] not in TERMINAL or (ns in counted and counted[ns] == st.get("revision")):
                    continue
                try:  # the next release: a new revision
                    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "release", {"spec": {"change": {
                        "containers": [{"name": "app", "image": image(f"2.0.{releases + 1}")}]}}})
                except kubernetes.client.rest.ApiException as exc:  # counted on the next look, patched again
                    log(f"{ns}: the next release was refused ({exc.status} {exc.reason}); trying again")
                    continue
                counted[ns] = st.get("revision")
                ended[phases[ns]] = ended.get(phases[ns], 0) + 1
                releases += 1
            time.sleep(2)
        watcher.stop.set()
        span = time.time() - t0
        om1 = bed.metrics()
    interval = float(args.interval.rstrip("s"))
    counts = per_interval(om1, om0, span / interval)
    rss = [s["rss_mib"] for s in samples]
    after = [s["rss_mib"] for s in samples if s["t"] >= args.warmup]
    at_end: dict[str, int] = {}
    for phase in phases.values():
        at_end[phase] = at_end.get(phase, 0) + 1
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "label": args.label,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "incremental_queries": os.environ.get("GUARDED_INCREMENTAL_QUERIES", "1") != "0",
        "rollouts": n, "soak_seconds": round(span, 1), "warmup_seconds": args.warmup,
        "interval_seconds": interval, "bake": args.bake, "sample_every_seconds": SAMPLE_EVERY,
        "releases_started": releases, "releases_ended": sum(ended.values()), "ended_by_phase": ended,
        "phases_at_end": at_end,
        "rss_mib": {"first": rss[0] if rss else None, "max": max(rss, default=None), "last": rss[-1] if rss else None,
                    "after_warmup_min": min(after, default=None), "after_warmup_max": max(after, default=None)},
        "rss_slope_mib_per_hour": slope_per_hour(samples, args.warmup),
        "operator_cpu_share_of_one_core": round((total(om1, "process_cpu_seconds_total") - cpu0) / span, 3),
        **counts,
        "samples": samples,
    }


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from scale_plot import soak_plot

    n = result["rollouts"]
    out = args.out or ROOT / "bench" / "results" / f"soak-{n}{'-' + args.label if args.label else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    png = args.png or ROOT / "docs" / "images" / f"soak-{n}.png"
    soak_plot(result, png)
    log(f"{result['releases_ended']} releases ended {result['ended_by_phase']}; RSS {result['rss_mib']}; slope after "
        f"{result['warmup_seconds']:.0f} s: {result['rss_slope_mib_per_hour']} MiB/h; API "
        f"{result['api_requests']['per_interval']} requests per interval ({result['api_requests']['gets_per_interval']}"
        f" GETs), {result['prometheus_queries']['per_interval']} Prometheus queries per interval")
    log(f"wrote {out} and {png}")


def main() -> None:
    raise SystemExit("run it as bench/scale.py --soak SECONDS (make bench-soak)")


if __name__ == "__main__":
    main()
