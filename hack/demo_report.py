"""What the demo shows: a timeline read from a GuardedRollout's status and Events, and a chart.

The timeline comes from what the operator records, not from what the demo saw: every transition
is in `.status.history` (millisecond times) and, as an Event, in the namespace; the judgements'
evidence is in `.status.analysis.recent`, which keeps only the latest few, so the demo collects
those records while it watches and passes them in. Events fill in what the bounded history dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    at: float  # unix time
    section: str  # which act of the demo: "healthy", "bad", "unguarded"
    kind: str  # "start", "wave", "ready", "judgement", "rollback", "rolledback", "promote", "done", "note"
    text: str
    wave: int | None = None

    def line(self, t0: float) -> str:
        return f"{clock(self.at - t0)}  {self.text}"

    def as_json(self, t0: float) -> dict[str, Any]:
        return {**asdict(self), "t": round(self.at - t0, 3)}


def clock(seconds: float) -> str:
    sign = "-" if seconds < 0 else "+"
    minutes, rest = divmod(abs(seconds), 60)
    return f"{sign}{int(minutes):02d}:{rest:04.1f}"


def unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wave_size(wave: dict[str, Any]) -> str:
    if wave.get("weight") is not None:
        return f"{wave['weight']}%"
    n = wave["replicas"]
    return f"{n} pod" if n == 1 else f"{n} pods"


def _after_wave_label(message: str) -> str:
    """'wave 2/4: 1 canary and ...' -> '1 canary and ...'."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("wave ") else message


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


UNITS = {"order-rate": "orders/req", "error-rate": "errors/req"}


def judgement_text(record: dict[str, Any] | None, wave: str, fallback: str) -> str:
    """One line for one analysis record: the verdict and the evidence that decided it."""
    if record is None:
        return _short(f"judgement ({wave}) {fallback}")
    verdict = record["verdict"]
    head = f"judgement {verdict} ({wave})"
    judgements = record.get("judgements", [])
    if verdict == "Fail":
        for j in judgements:
            for e in j.get("evidence", []):
                if e["verdict"] == "Fail":
                    return _short(f"{head}  {j['metric']}/{e['judge']}: {e['reason']}", 170)
        alerts = ", ".join(record.get("alerts", []))
        return f"{head}  alert firing: {alerts}" if alerts else _short(f"{head}  {fallback}")
    if verdict == "Pass":
        parts, requests = [], 0.0
        for j in judgements:
            e = next((e for e in j.get("evidence", []) if e["judge"] == "Stable"), None)
            if e is None or e.get("canaryRatio") is None or e.get("referenceRatio") is None:
                parts.append(f"{j['metric']} {j['verdict']}")
                continue
            requests = max(requests, e["canaryRequests"])
            parts.append(f"{UNITS.get(j['metric'], j['metric'])} {e['canaryRatio']:.4f} vs stable "
                         f"{e['referenceRatio']:.4f}")
        counted = f" ({requests:,.0f} canary requests)" if requests else ""
        return f"{head}  {'; '.join(parts)}{counted}"
    held = [f"{j['metric']}: {j['reason'].split('; ')[0]}" for j in judgements if j["verdict"] != "Pass"]
    return _short(f"{head}  holding: {held[0] if held else fallback}")


def rollout_entries(rollout: dict[str, Any], records: dict[str, dict[str, Any]], events: list[dict[str, Any]],
                    section: str, version: str) -> list[Entry]:
    """The rollout's story, one Entry a transition, from its history (and Events the history dropped)."""
    waves = rollout["spec"].get("waves") or []
    status = rollout.get("status") or {}
    history = list(status.get("history", []))
    seen = {(h["reason"], h["message"]) for h in history}
    history += [e for e in events if (e["reason"], e["message"]) not in seen]
    history.sort(key=lambda h: unix(h["time"]))
    entries = []
    for h in history:
        at, reason, message, wave = unix(h["time"]), h["reason"], h["message"], h.get("wave")
        label = f"wave {wave + 1} ({wave_size(waves[wave])})" if wave is not None and wave < len(waves) else "wave"
        short = f"wave {wave + 1}" if wave is not None else "wave"

        def add(kind: str, text: str, wave: int | None = wave, at: float = at) -> None:
            entries.append(Entry(at, section, kind, text, wave))
        if reason == "GatesPassed":
            gates = [part.split(":", 1)[0] for part in message.split("; ") if ":" in part]
            add("note", f"pre-flight gates passed ({', '.join(gates)})" if gates else f"{reason}: {message}")
        elif reason == "RolloutStarted":
            add("start", f"rollout of {version} started: {message.removeprefix('rolling out ')}")
        elif reason == "WaveStarted":
            add("wave", f"{label} started: {_after_wave_label(message)}")
        elif reason == "WaveReady":
            add("ready", f"{label} ready: {_after_wave_label(message)}")
        elif reason in ("AnalysisPassed", "AnalysisInconclusive"):
            add("judgement", judgement_text(records.get(h["time"]), short, f"{reason}: {_after_wave_label(message)}"))
        elif reason == "RollingBack":
            record = records.get(h["time"])
            if record is not None and record["verdict"] == "Fail":
                add("judgement", judgement_text(record, short, message))
            why = status.get("rollbackReason") or message.split(":", 1)[0]
            plan = message.rsplit("; ", 1)[-1] if "; removing" in message else "removing the canary"
            add("rollback", f"rolling back ({why}) in {label}: {plan}")
        elif reason == "RolledBack":
            add("rolledback", f"rolled back: {message.split(': ', 1)[-1]}", None)
        elif reason == "Promoting":
            add("promote", f"all waves passed: promoting {version} to the Deployment", None)
        elif reason == "Succeeded":
            add("done", f"succeeded: {message.split(': ', 1)[-1]}", None)
        else:
            add("note", _short(f"{reason}: {message}"))
    return entries


COLOURS = {"healthy": "#2ca02c", "bad": "#d62728", "unguarded": "#7f7f7f"}


def chart(path: Path, *, t0: float, orders: dict[str, list[tuple[float, float]]],
          expected: dict[str, list[tuple[float, float]]], lost_version: str, entries: list[Entry],
          spans: dict[str, tuple[float, float, str]], colours: dict[str, str], title: str) -> None:
    """Order rate per version over time, shaded per act, with each wave start and the rollback marked;
    the orders `lost_version` lost (expected at the shop's ratio minus taken) filled in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 6), dpi=110)
    for section, (start, end, label) in spans.items():
        ax.axvspan(start - t0, end - t0, color=COLOURS.get(section, "#cccccc"), alpha=0.08)
        ax.text((start + end) / 2 - t0, 1.01, label, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8.5, color=COLOURS.get(section, "black"))
    total: dict[float, float] = {}
    for points in orders.values():
        for t, v in points:
            total[t] = total.get(t, 0.0) + v
    ax.plot([t - t0 for t in sorted(total)], [total[t] for t in sorted(total)], color="black", lw=0.8, alpha=0.6,
            label="orders/s, all pods")
    for version, points in orders.items():
        ax.plot([t - t0 for t, _ in points], [v for _, v in points], lw=1.5, label=f"orders/s on {version} pods",
                color=colours.get(version))
    want = expected.get(lost_version, [])
    if want:
        got = dict(orders.get(lost_version, []))
        times = [t - t0 for t, _ in want]
        ax.plot(times, [v for _, v in want], color=colours.get(lost_version), lw=1.0, ls=":",
                label=f"orders/s {lost_version} pods should have taken (5% of their successful requests)")
        ax.fill_between(times, [got.get(t, 0.0) for t, _ in want], [v for _, v in want],
                        color=colours.get(lost_version), alpha=0.2, lw=0, label=f"orders lost to {lost_version}")
    for e in entries:
        x = e.at - t0
        if e.kind == "wave":
            ax.axvline(x, color=COLOURS.get(e.section, "grey"), ls="--", lw=0.9)
            ax.text(x, 0.98, f" wave {(e.wave or 0) + 1}", transform=ax.get_xaxis_transform(), fontsize=8,
                    va="top", color=COLOURS.get(e.section, "grey"))
        elif e.kind == "rollback":
            ax.axvline(x, color="#d62728", lw=1.8)
            ax.text(x, 0.90, "rollback ", transform=ax.get_xaxis_transform(), fontsize=8.5, va="top", ha="right",
                    color="#d62728", weight="bold")
        elif e.kind == "unguarded":
            ax.axvline(x, color="black", lw=1.8)
            ax.text(x, 0.90, " rolling update", transform=ax.get_xaxis_transform(), fontsize=8.5, va="top",
                    color="black", weight="bold")
    ax.set_xlabel("seconds since the first release started")
    ax.set_ylabel("orders per second")
    ax.set_ylim(bottom=0)
    ax.margins(x=0.01)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=11, pad=34)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
