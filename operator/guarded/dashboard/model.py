"""What the dashboard's page shows, as pure functions of the objects the API returns (plain dicts).

Built from the plugin's own views (`guarded.cli.view`, `gateview`, `tables`, `text`), so the page and
`kubectl guarded status` never disagree on a phase, a wave or an approval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from guarded.api.policy import DOCUMENTATION_FIELDS
from guarded.api.stages import phase_in
from guarded.cli.gateview import (
    GATE_HEADERS,
    approvals_headline,
    authors_of,
    counted_text,
    emergency_text,
    gate_row,
    generation,
    person_text,
)
from guarded.cli.tables import HISTORY_HEADERS, age, history_rows, nested, percent
from guarded.cli.text import change_text, documentation_label, target_text, wave_size
from guarded.cli.view import (
    EVIDENCE_HEADERS,
    evidence_rows,
    progress,
    replicas_line,
    request_line,
    status_view,
    wave_states,
    waves_in_effect,
)

# The buttons, each the plugin command of the same name (promote-full is `promote --full`).
ACTIONS = ("approve", "promote", "promote-full", "pause", "resume", "abort", "retry")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def is_terminal(obj: dict[str, Any]) -> bool:
    phase = phase_in(obj.get("status") or {})
    return phase is not None and phase.terminal


def list_row(obj: dict[str, Any], now: datetime, *, child: bool = False) -> dict[str, Any]:
    """One line of the list: what `kubectl guarded list` shows, plus the author and the approvals."""
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    done, total = progress(obj)
    return {
        "namespace": meta.get("namespace", ""), "name": meta.get("name", ""), "child": child,
        "target": (spec.get("target") or {}).get("name", ""), "phase": status.get("phase") or "Pending",
        "stage": status.get("stage") or "", "wave": f"{done}/{total}", "waveDone": done, "waveTotal": total,
        "canary": percent(status.get("canaryWeight")), "authors": authors_of(obj),
        "approvals": approvals_headline(status) if status.get("gates") or status.get("approvals") else "",
        "age": age(meta.get("creationTimestamp"), now), "message": status.get("message") or "",
        "terminal": is_terminal(obj),
    }


def list_view(items: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The rollouts by namespace and name, a consumer's rollout right under the one it is part of."""
    return [list_row(obj, now, child=child) for obj, child in nested(items)]


def waves_view(obj: dict[str, Any]) -> list[dict[str, Any]]:
    status = obj.get("status") or {}
    waves = waves_in_effect(obj)
    states = wave_states(len(waves), status)
    return [{"number": i + 1, "size": wave_size(wave, status.get("stableReplicas")), "bake": wave.get("bake", "60s"),
             "gate": bool(wave.get("manualGate")), "state": state,
             "current": state.startswith("current") or state in ("rolled back", "failed")}
            for i, (wave, state) in enumerate(zip(waves, states, strict=True))]


def analysis_view(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each judgement, newest first, with every judge's evidence as the status view's table rows."""
    out = []
    for record in reversed(records):
        wave = record.get("wave")
        out.append({
            "time": record.get("time", ""), "wave": None if wave is None else wave + 1,
            "verdict": record.get("verdict", ""), "intervals": record.get("intervals", 0),
            "alerts": list(record.get("alerts") or []),
            "judgements": [{"metric": j.get("metric", ""), "verdict": j.get("verdict", ""),
                            "reason": j.get("reason", ""),
                            "evidence": evidence_rows(j.get("evidence") or [])}
                           for j in record.get("judgements") or []],
        })
    return out


def approvals_view(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": a.get("name", ""), "approver": person_text(a.get("approver", "?"), a.get("groups")),
             "revision": a.get("revision"), "counted": counted_text(a)} for a in status.get("approvals") or []]


def rollout_view(obj: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """One rollout's page. `records`: the analysis records seen so far (the status keeps the newest few)."""
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    done, total = progress(obj)
    return {
        "namespace": meta.get("namespace", ""), "name": meta.get("name", ""), "revision": generation(obj),
        "target": target_text(spec), "phase": status.get("phase") or "Pending", "stage": status.get("stage") or "",
        "message": status.get("message") or "", "terminal": is_terminal(obj),
        "rollbackReason": status.get("rollbackReason") or "", "emergency": emergency_text(obj) or "",
        "change": change_text(spec), "authors": authors_of(obj),
        "documentation": [[documentation_label(k), spec[k]] for k in DOCUMENTATION_FIELDS if spec.get(k)],
        "aiAssisted": bool(spec.get("aiAssisted")), "replicas": replicas_line(status).split(":", 1)[1].strip(),
        "progress": {"done": done, "total": total}, "canary": percent(status.get("canaryWeight")),
        "paused": bool(status.get("paused")), "waves": waves_view(obj),
        "gates": {"headers": GATE_HEADERS, "rows": [gate_row(g) for g in status.get("gates") or []]},
        "approvalsHeadline": approvals_headline(status) if status.get("gates") or status.get("approvals") else
        "not judged yet", "approvals": approvals_view(status),
        "policy": [[r.get("rule"), r.get("value"), ", ".join(r.get("setBy") or [])]
                   for r in (status.get("policy") or {}).get("rules") or []],
        "policies": list((status.get("policy") or {}).get("policies") or []),
        "conditions": [[c.get("type"), c.get("status"), c.get("reason"), c.get("message")]
                       for c in status.get("conditions") or []],
        "evidenceHeaders": EVIDENCE_HEADERS, "analysis": analysis_view(records),
        "lastRequest": request_line(status).split(":", 1)[1].strip(),
        "historyHeaders": HISTORY_HEADERS, "history": history_rows(status),
        "statusText": status_view(obj), "actions": list(ACTIONS),
    }


def merge_records(seen: dict[str, dict[str, Any]], status: dict[str, Any]) -> list[dict[str, Any]]:
    """Add the status's analysis records to those seen before (by time), and return all in time order."""
    for record in (status.get("analysis") or {}).get("recent") or []:
        if record.get("time"):
            seen[record["time"]] = record
    return [seen[t] for t in sorted(seen)]
