"""The rollout's chart: each metric's ratio per version over time, from Prometheus, with the waves and the
judgements marked (as the demo's chart does), and the canary's share of requests.

The queries are the operator's own: the rollout's metrics (`effective_metrics`: its explicit metrics plus
the order-rate and error-rate guards of its shortcuts) rendered for the canary's and the stable's pods
(`metrics.queries`), over a sliding window. The figure is built with plotly and drawn in the page by
plotly.js: the page has no chart code of its own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pydantic import ValidationError

from guarded.api.analysis import Analysis
from guarded.cli.tables import parse_time
from guarded.core.analysis.selection import effective_metrics
from guarded.dashboard.model import is_terminal
from guarded.metrics.provider import MetricProvider, Series
from guarded.metrics.queries import Pair, metric_queries

POINTS = 240             # about this many points per line, whatever the rollout's length
LEAD_SECONDS = 60        # shown before the rollout started: the service as it was
TAIL_SECONDS = 30        # shown after it ended
MIN_WINDOW_SECONDS = 10  # the increase each point is computed over: long enough for a few scrapes
VERSIONS = {"canary": "#e4572e", "stable": "#1f77b4"}
VERDICT_COLOURS = {"Pass": "#2ca02c", "Fail": "#d62728", "Inconclusive": "#999999"}
# Transitions drawn as vertical lines, with the label each gets.
MARKED = {"RolloutStarted": "start", "WaveStarted": "wave {wave}", "Promoting": "promote",
          "Succeeded": "succeeded", "RollingBack": "rolling back", "RolledBack": "rolled back"}


@dataclass(frozen=True, kw_only=True)
class Window:
    start: datetime
    end: datetime
    step: float      # seconds between points
    rate: int        # seconds each point's increase covers

    @property
    def rate_text(self) -> str:
        return f"{self.rate}s"


def window_of(obj: dict[str, Any], now: datetime) -> Window:
    """From a minute before the rollout began to half a minute after it ended (or now)."""
    status = obj.get("status") or {}
    times = [t for t in (parse_time(h.get("time")) for h in status.get("history") or []) if t is not None]
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp")) or now
    start = min([created, *times]) - timedelta(seconds=LEAD_SECONDS)
    end = min(now, max(times) + timedelta(seconds=TAIL_SECONDS)) if times and is_terminal(obj) else now
    end = max(end, start + timedelta(seconds=LEAD_SECONDS))
    step = max(1.0, math.ceil((end - start).total_seconds() / POINTS))
    return Window(start=start, end=end, step=step, rate=max(MIN_WINDOW_SECONDS, int(3 * step)))


def analysis_of(obj: dict[str, Any]) -> tuple[Analysis | None, str]:
    """The rollout's spec.analysis, or None and why there is nothing to chart."""
    spec = obj.get("spec") or {}
    if not spec.get("analysis"):
        return None, "this rollout has no spec.analysis: no metrics to chart"
    try:
        return Analysis.model_validate(spec["analysis"]), ""
    except ValidationError as exc:
        return None, f"spec.analysis does not parse: {exc.errors()[0].get('msg', exc)}"


def queries_of(obj: dict[str, Any], analysis: Analysis, window: Window) -> dict[str, dict[str, Pair]]:
    """Per metric name, per version: the events and requests queries (the operator's templates)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    out = {}
    for metric in effective_metrics(analysis):
        target = (spec.get("target") or {}).get("name", "")
        q = metric_queries(metric, namespace=meta.get("namespace", ""), target=target,
                           interval=window.rate_text, pre_rollout_window=analysis.pre_rollout_window)
        out[metric.name] = {"canary": q.canary, "stable": q.stable}
    return out


def ratio(events: Series, requests: Series) -> dict[float, float]:
    """events/requests at each time both have a value and there were requests."""
    return {t: events.values[t] / r for t, r in requests.values.items() if r > 0 and t in events.values}


def share(canary: Series, stable: Series) -> dict[float, float]:
    """The canary's percent of the requests at each time."""
    out = {}
    for t, c in canary.values.items():
        total = c + stable.values.get(t, 0.0)
        if total > 0:
            out[t] = 100.0 * c / total
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _xs(points: dict[float, float], step: float) -> tuple[list[str], list[float | None]]:
    """The points in time order, with a gap (None) where Prometheus had nothing, so no line bridges it."""
    xs: list[str] = []
    ys: list[float | None] = []
    last = None
    for t, v in sorted(points.items()):
        if last is not None and t - last > 2 * step:
            xs.append(_iso(last + step))
            ys.append(None)
        xs.append(_iso(t))
        ys.append(v)
        last = t
    return xs, ys


def marker_y(judgement: dict[str, Any]) -> float | None:
    """Where a judgement's marker sits: the canary ratio its first judge saw (over the wave so far)."""
    for e in judgement.get("evidence") or []:
        if e.get("canaryRatio") is not None:
            return float(e["canaryRatio"])
        if e.get("canaryRequests"):
            return float(e.get("canaryEvents", 0)) / float(e["canaryRequests"])
    return None


def _plain(value: object) -> str:
    """A value as text in plotly's hover labels, which read a few HTML tags (<a href>, <b>, <br>): a
    judge's reason or a metric name must show as written, never become a link or markup."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def evidence_text(record: dict[str, Any], judgement: dict[str, Any]) -> str:
    """The hover text of a judgement's marker: its values escaped, lines joined with <br>."""
    wave = record.get("wave")
    lines = [f"{record.get('time')} wave {'-' if wave is None else wave + 1}: {judgement.get('metric')} "
             f"{judgement.get('verdict')}"]
    lines += [f"{e.get('judge')}: {e.get('verdict')} {e.get('reason') or ''}".rstrip()
              for e in judgement.get("evidence") or []]
    if judgement.get("reason") and not judgement.get("evidence"):
        lines.append(str(judgement["reason"]))
    return "<br>".join(_plain(line) for line in lines)


def figure(obj: dict[str, Any], window: Window, lines: dict[str, dict[str, dict[float, float]]],
           canary_share: dict[float, float], records: list[dict[str, Any]]) -> go.Figure:
    """The figure: one panel per metric (canary and stable ratio, the judgements), then the canary's share;
    a dotted line at each wave and at the end, across every panel."""
    names = list(lines)
    fig = make_subplots(rows=len(names) + 1, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[*(f"{n} (events per request)" for n in names), "canary share of requests (%)"])
    for row, name in enumerate(names, start=1):
        for version, colour in VERSIONS.items():
            xs, ys = _xs(lines[name].get(version, {}), window.step)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=version, legendgroup=version,
                                     showlegend=row == 1, line={"color": colour, "width": 1.5}), row=row, col=1)
        for verdict, colour in VERDICT_COLOURS.items():
            xs, ys, texts = [], [], []
            for record in records:
                for j in record.get("judgements") or []:
                    y = marker_y(j)
                    if j.get("metric") == name and j.get("verdict") == verdict and y is not None and record.get("time"):
                        xs.append(record["time"].replace("Z", ""))
                        ys.append(y)
                        texts.append(evidence_text(record, j))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"judged {verdict}", legendgroup=verdict,
                                     showlegend=row == 1, marker={"color": colour, "size": 8, "symbol": "diamond"},
                                     text=texts, hovertemplate="%{text}<extra></extra>"), row=row, col=1)
    xs, ys = _xs(canary_share, window.step)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="canary share", line={"color": VERSIONS["canary"],
                             "shape": "hv", "width": 1.5}, fill="tozeroy", showlegend=False),
                  row=len(names) + 1, col=1)
    for entry in (obj.get("status") or {}).get("history") or []:
        label = MARKED.get(entry.get("reason", ""))
        if label is None or not entry.get("time"):
            continue
        at = entry["time"].replace("Z", "")
        wave = entry.get("wave")
        fig.add_vline(x=at, line={"dash": "dot", "width": 1, "color": "#555"})
        text = label.format(wave="-" if wave is None else wave + 1)
        fig.add_annotation(x=at, y=1.0, yref="paper", xref="x", text=text,
                           showarrow=False, textangle=-90, xanchor="right", yanchor="top", font={"size": 10})
    # A date axis from the start, even before any point exists (else plotly.js guesses a linear one).
    fig.update_xaxes(type="date", range=[window.start.strftime("%Y-%m-%dT%H:%M:%S"),
                                         window.end.strftime("%Y-%m-%dT%H:%M:%S")])
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(height=220 * (len(names) + 1), margin={"l": 60, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.08}, template="plotly_white")
    return fig


def chart(obj: dict[str, Any], provider: MetricProvider | None, records: list[dict[str, Any]],
          now: datetime, *, deadline: float | None = None,
          clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """{"figure": plotly JSON}, {"note": why there is none} or {"unavailable": why Prometheus could not
    answer}; query errors are named, never raised. Past `deadline` (a `clock` reading) or once Prometheus
    is unreachable, no further query is sent: a slow Prometheus costs one chart a bounded time."""
    if provider is None:
        return {"note": "no Prometheus configured: start the dashboard with --prometheus-url"}
    analysis, why = analysis_of(obj)
    if analysis is None:
        return {"note": why}
    window = window_of(obj, now)
    lines: dict[str, dict[str, dict[float, float]]] = {}
    requests: dict[str, Series] = {}
    errors = []
    for name, pairs in queries_of(obj, analysis, window).items():
        lines[name] = {}
        for version, pair in pairs.items():
            got = []
            for q in (pair.events, pair.requests):
                if deadline is not None and clock() > deadline:
                    return {"unavailable": "Prometheus did not answer the chart's queries in time"}
                series = provider.range(q, start=window.start, end=window.end, step_seconds=window.step)
                if series.error and "unreachable" in series.error:  # the provider's word for a network failure
                    return {"unavailable": series.error}
                got.append(series)
            errors += [s.error for s in got if s.error]
            lines[name][version] = ratio(*got)
            requests.setdefault(version, got[1])
    fig = figure(obj, window, lines, share(requests.get("canary", Series()), requests.get("stable", Series())),
                 records)
    return {"figure": json.loads(fig.to_json()), "errors": sorted(set(errors))}
