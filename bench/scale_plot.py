"""bench/scale_plot: the cost of N concurrent rollouts against N, from bench/results/scale-*.json (bench/scale.py).

Draws docs/images/scale-cost.png: against the rollouts in flight (log scale), the operator's API requests per
rollout per analysis interval, its API requests and GETs per interval in all, its Prometheus queries per
interval, its CPU as a share of one core, its peak resident memory, and the bad release's detection time
(runs with --bad). Runs with a label ("before", "after") are lines of their own. Also draws a soak's RSS over
time (soak_plot, used by bench/scale_soak.py). `make bench-scale-plot`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figures(run: dict[str, Any]) -> dict[str, float | None]:
    """One run's points; older results (before the per-interval fields) are computed from their totals."""
    intervals = run["span_seconds"] / run["interval_seconds"]
    api, queries = run["api_requests"], run["prometheus_queries"]
    gets = sum(v for k, v in api.get("by_verb_resource", {}).items() if k.startswith("get "))
    bad = run.get("bad_release") or {}
    return {"x": run.get("rollouts_in_flight", run["rollouts"]),
            "api_per_rollout": api["per_rollout_per_interval"],
            "api_per_interval": api.get("per_interval", api["total"] / intervals),
            "gets_per_interval": api.get("gets_per_interval", gets / intervals),
            "queries_per_interval": queries.get("per_interval", queries["total"] / intervals),
            "cpu": run["operator_cpu_share_of_one_core"], "rss": run["operator_rss_peak_mib"],
            "detect": bad.get("detected_after_seconds")}


PANELS = [("api_per_rollout", "API requests per rollout per interval"),
          ("api_per_interval", "API requests per interval (all rollouts)"),
          ("queries_per_interval", "Prometheus queries per interval (all rollouts)"),
          ("cpu", "operator CPU, share of one core"),
          ("rss", "operator peak RSS, MiB"),
          ("detect", "bad release: detected after canary Ready, s")]


def cost_plot(runs: list[dict[str, Any]], png: Path) -> None:
    plt = pyplot()
    from matplotlib import ticker

    series: dict[str, list[dict[str, float | None]]] = {}
    for run in runs:
        series.setdefault(run.get("label") or "unlabelled", []).append(figures(run))
    colours = {label: f"C{i}" for i, label in enumerate(sorted(series))}  # one colour per label in every panel
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for label, points in sorted(series.items()):
            xs = sorted({p["x"] for p in points if p[key] is not None})
            if not xs:
                continue
            # several runs at one N: their median
            ys = [statistics.median(p[key] for p in points if p["x"] == x and p[key] is not None) for x in xs]
            ax.plot(xs, ys, marker="o", color=colours[label], label=label)
            if key == "api_per_interval":
                gs = [statistics.median(p["gets_per_interval"] for p in points if p["x"] == x) for x in xs]
                ax.plot(xs, gs, marker="x", linestyle="--", color=colours[label], label=f"{label}: GETs")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if not ax.lines:
            ax.text(0.5, 0.5, "no run yet", transform=ax.transAxes, ha="center", color="grey")
        ax.set_xlabel("rollouts in flight (N)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("bench/scale: what N concurrent rollouts cost one operator (bench/results/scale-*.json)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def soak_plot(result: dict[str, Any], png: Path) -> None:
    plt = pyplot()
    samples = result["samples"]
    minutes = [s["t"] / 60 for s in samples]
    fig, (ax, cpu) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 1])
    ax.plot(minutes, [s["rss_mib"] for s in samples], label="operator RSS")
    warmup = result["warmup_seconds"]
    ax.axvline(warmup / 60, color="grey", linestyle=":", label="end of warm-up")
    after = [s for s in samples if s["t"] >= warmup]
    slope = result.get("rss_slope_mib_per_hour")
    if slope is not None and len(after) >= 2:
        mean_t = statistics.fmean(s["t"] for s in after)
        mean_rss = statistics.fmean(s["rss_mib"] for s in after)
        ends = [after[0]["t"], after[-1]["t"]]
        ax.plot([t / 60 for t in ends], [mean_rss + slope / 3600 * (t - mean_t) for t in ends], color="red",
                label=f"least squares after warm-up: {slope:+.2f} MiB/h")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"soak: {result['rollouts']} rollouts in flight for {result['soak_seconds'] / 60:.0f} min, "
                 f"{result['releases_ended']} releases ended")
    cpu.plot([s["t"] / 60 for s in samples if "cpu_share" in s], [s["cpu_share"] for s in samples if "cpu_share" in s],
             color="green")
    cpu.set_ylabel("CPU, cores")
    cpu.set_xlabel("minutes")
    cpu.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "scale-cost.png")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in sorted(args.results.glob("scale-*.json"))]
    if not runs:
        raise SystemExit(f"no scale-*.json in {args.results}")
    cost_plot(runs, args.png)
    print(f"{len(runs)} runs -> {args.png}")


if __name__ == "__main__":
    main()
