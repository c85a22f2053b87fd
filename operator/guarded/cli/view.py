"""The status view of one GuardedRollout, as pure functions of the object (a plain dict)."""

from __future__ import annotations

from typing import Any

from guarded.api.policy import DOCUMENTATION_FIELDS
from guarded.api.stages import Phase, Stage, phase_in, stage_in
from guarded.cli.gateview import (
    approvals_section,
    authors_of,
    emergency_text,
    gates_section,
    policy_section,
)
from guarded.cli.tables import format_table, one_line, percent
from guarded.cli.text import (
    _indent,
    _kv,
    _num,
    change_text,
    config_entries,
    consumers_of,
    documentation_label,
    part_of,
    shorten,
    spec_waves,
    target_text,
    wave_size,
)

VALUE_WIDTH = 48     # a ConfigMap value, shortened
KEYS_SHOWN = 12      # keys listed per ConfigMap; the rest are counted
MESSAGE_WIDTH = 60   # a consumer's message, shortened
CONSUMER_HEADERS = ["DEPLOYMENT", "ROLLOUT", "PHASE", "STAGE", "WAVE", "CANARY", "STABLE", "MESSAGE"]

STAGE_DOING = {
    Stage.SCALE_CANARY: "raising the canary",
    Stage.SCALE_STABLE: "lowering the stable",
    Stage.BAKE: "baking",
    Stage.GATE: "waiting for promote",
    Stage.RETIRING: "retiring an old canary",
    Stage.PENDING: "starting",
}


def promoted(status: dict[str, Any]) -> bool:
    """The change is promoted: every wave is done."""
    stage = stage_in(status)
    return phase_in(status) == Phase.SUCCEEDED or (stage is not None and (stage.promoting or stage == Stage.SUCCEEDED))


def rolled_back(status: dict[str, Any]) -> bool:
    """The rollout is rolling back or has rolled back, by its phase or (a failed one) by its stage."""
    phase = phase_in(status)
    return (phase is not None and phase.rollback) or stage_in(status) in (Stage.ROLLING_BACK, Stage.ROLLED_BACK)


def wave_states(count: int, status: dict[str, Any]) -> list[str]:
    """Per wave: done, pending, or what the current one is doing (or that it was rolled back)."""
    stage, current = status.get("stage"), status.get("wave")
    if promoted(status):
        return ["done"] * count
    states = []
    for i in range(count):
        if current is None or i > current:
            states.append("pending")
        elif i < current:
            states.append("done")
        elif rolled_back(status):
            states.append("rolled back")
        elif status.get("phase") == Phase.FAILED:
            states.append("failed")
        elif status.get("paused"):
            states.append("current: paused")
        else:
            states.append(f"current: {STAGE_DOING.get(stage or '', stage or 'unknown')}")
    return states


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """[##########----------] for 2 of 4."""
    filled = 0 if total <= 0 else max(0, min(width, round(width * done / total)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress(obj: dict[str, Any]) -> tuple[int, int]:
    """(current wave 1-based, all waves); every wave counts as done once the change is promoted."""
    status = obj.get("status") or {}
    total = status.get("wavesTotal") or len(spec_waves(obj.get("spec") or {}))
    if promoted(status):
        return total, total
    wave = status.get("wave")
    return (0 if wave is None else min(total, wave + 1)), total


def progress_line(obj: dict[str, Any], width: int = 20) -> str:
    done, total = progress(obj)
    return f"{progress_bar(done, total, width)} wave {done}/{total}"


def summary_line(obj: dict[str, Any]) -> str:
    """One line per state, for `watch` when the output is not a terminal."""
    status = obj.get("status") or {}
    canary = status.get("canaryWeight")
    parts = [status.get("phase") or "Pending", progress_line(obj)]
    if canary is not None:
        parts.append(f"canary {canary}%")
    if status.get("message"):
        parts.append(one_line(status["message"]))
    return "  ".join(parts)


def waves_in_effect(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan the operator fixed at the start (policy limits and emergency bakes applied), else the spec's."""
    plan = (obj.get("status") or {}).get("plan")
    return list(plan) if plan else spec_waves(obj.get("spec") or {})


def waves_section(obj: dict[str, Any]) -> list[str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    waves = waves_in_effect(obj)
    states = wave_states(len(waves), status)
    rows = []
    for i, (wave, state) in enumerate(zip(waves, states, strict=True)):
        marker = ">" if state.startswith("current") or (state in ("rolled back", "failed")) else " "
        gate = "manual gate" if wave.get("manualGate") else ""
        rows.append([marker, str(i + 1), wave_size(wave, status.get("stableReplicas")),
                     f"bake {wave.get('bake', '60s')}", gate, state])
    note = "  (as planned at the start)" if status.get("plan") else "" if spec.get("waves") else "  (default waves)"
    lines = [f"Waves:        {progress_line(obj)}" + note]
    lines += _indent(format_table(["", "#", "SIZE", "BAKE", "GATE", "STATE"], rows))
    return lines


def conditions_section(status: dict[str, Any]) -> list[str]:
    conditions = status.get("conditions") or []
    if not conditions:
        return ["Conditions:   <none>"]
    rows = [[c.get("type"), c.get("status"), c.get("reason"), c.get("message")] for c in conditions]
    return ["Conditions:", *_indent(format_table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows))]


def evidence_rows(evidence: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for e in evidence:
        # A superseded record keeps no counts nor threshold (its trajectory only): shown as "-".
        events, requests = e.get("canaryEvents"), e.get("canaryRequests")
        ratio = e.get("canaryRatio")
        if ratio is None and events is not None and requests:
            ratio = events / requests
        counts = "-" if events is None and requests is None else f"{_num(events or 0)}/{_num(requests or 0)}"
        rows.append([e.get("judge", ""), e.get("verdict", ""), counts, _num(ratio),
                     _num(e.get("referenceRatio")), _num(e.get("thresholdRho")),
                     f"{_num(e.get('logLr', 0.0), 3)} / {_num(e.get('logThreshold'), 3)}",
                     e.get("reason", "")])
    return rows


EVIDENCE_HEADERS = ["JUDGE", "VERDICT", "CANARY EV/REQ", "RATIO", "REFERENCE", "RHO", "LOGLR / THRESHOLD", "REASON"]


def analysis_section(status: dict[str, Any]) -> list[str]:
    recent = (status.get("analysis") or {}).get("recent") or []
    if not recent:
        return ["Analysis:     <none yet>"]
    last = recent[-1]
    wave = last.get("wave")
    where = "" if wave is None else f"wave {wave + 1}, "
    lines = [f"Analysis:     {last.get('verdict', '?')} at {last.get('time', '?')} "
             f"({where}{last.get('intervals', 0)} intervals)"]
    if last.get("alerts"):
        lines.append(f"  alerts firing: {', '.join(last['alerts'])}")
    for judgement in last.get("judgements") or []:
        lines.append(f"  {judgement.get('metric', '?')}: {judgement.get('verdict', '?')}")
        evidence = judgement.get("evidence") or []
        if evidence:
            lines += _indent(format_table(EVIDENCE_HEADERS, evidence_rows(evidence)), "    ")
        elif judgement.get("reason"):
            lines.append(f"    {one_line(judgement['reason'])}")
    return lines


def request_line(status: dict[str, Any]) -> str:
    req = status.get("lastRequest")
    if not req:
        return _kv("Last request", "<none>")
    by = f" by {req['by']}" if req.get("by") else ""
    text = f"{req.get('action')} (id {req.get('id')}){by}: {req.get('result')} at {req.get('time')}"
    if req.get("message"):
        text += f": {req['message']}"
    return _kv("Last request", text)


def replicas_line(status: dict[str, Any]) -> str:
    canary, stable = status.get("canaryReplicas"), status.get("stableReplicas")
    if status.get("phase") == Phase.SUCCEEDED:
        return _kv("Replicas", f"the change runs on the target's {'-' if stable is None else stable} pods; "
                               "canary removed")
    canary_text = "-" if canary is None else str(canary)
    if status.get("canaryWeight") is not None:
        canary_text += f" ({percent(status['canaryWeight'])} of ready pods)"
    stable_text = "-" if stable is None else f"{stable} (the target's count before the rollout)"
    return _kv("Replicas", f"canary {canary_text}, stable {stable_text}")


def config_lines(entry: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """One changed ConfigMap or Secret: name -> version, then what changes; a ConfigMap's values shortened
    (`data`: its spec.change data), a Secret's never (the rollout holds none: it names another Secret)."""
    kind, version, source = entry["kind"], entry.get("version"), entry.get("contentFrom")
    hidden = "   (values are never shown)" if kind == "Secret" else ""
    lines = [f"  {kind} {entry['name']} -> {version or '<version not made yet>'}{hidden}"]
    if source and source != version:
        lines.append(f"    new content: all of {kind} {source}")
    keys = entry.get("keys") or []
    lines += [f"    sets {key} = {shorten(data.get(key), VALUE_WIDTH)}" for key in keys[:KEYS_SHOWN]]
    if len(keys) > KEYS_SHOWN:
        lines.append(f"    sets {len(keys) - KEYS_SHOWN} more keys")
    if entry.get("removedKeys"):
        lines.append(f"    removes {', '.join(entry['removedKeys'])}")
    return lines


def config_section(spec: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """The ConfigMaps and Secrets the change rolls out, each with the version its canary reads."""
    entries = config_entries(spec, status)
    if not entries:
        return []
    data = {c.get("name"): c.get("data") or {} for c in (spec.get("change") or {}).get("configMaps") or []}
    lines = ["Configuration:"]
    for entry in entries:
        lines += config_lines(entry, data.get(entry["name"], {}) if entry["kind"] == "ConfigMap" else {})
    return lines


def consumers_section(obj: dict[str, Any]) -> list[str]:
    """The Deployments a shared configuration change moves, each by its own rollout (spec.target by this one)."""
    consumers = consumers_of(obj)
    if not consumers:
        return []
    if not (obj.get("status") or {}).get("consumers"):
        names = ", ".join(str(c.get("name")) for c in consumers)
        return [_kv("Consumers", f"{names} (each moved by a rollout of its own once this one starts)")]
    rows = [[c.get("name"), c.get("rollout") or "-", c.get("phase") or "-", c.get("stage") or "-",
             c.get("waveProgress") or "-", _num(c.get("canaryReplicas")), _num(c.get("stableReplicas")),
             shorten(c.get("message"), MESSAGE_WIDTH)] for c in consumers]
    head = (f"{len(consumers)} Deployments read the change, each judged against its own stable pods; "
            "a rollback of one rolls back all")
    return [_kv("Consumers", head), *_indent(format_table(CONSUMER_HEADERS, rows))]


def part_of_line(meta: dict[str, Any]) -> list[str]:
    parent = part_of(meta)
    return [_kv("Part of", f"guardedrollout/{parent} (its gates and waves lead this one)")] if parent else []


def status_view(obj: dict[str, Any]) -> str:
    """What `kubectl guarded status NAME` prints."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if status.get("stage"):
        phase += f" (stage {status['stage']})"
    lines = [_kv("Name", meta.get("name")), _kv("Namespace", meta.get("namespace")),
             _kv("Target", target_text(spec)), *part_of_line(meta),
             _kv("Phase", phase), _kv("Message", status.get("message") or "")]
    known = phase_in(status)
    if status.get("rollbackReason") and known is not None and known.rollback:
        lines.append(_kv("Rollback", status["rollbackReason"]))
    emergency = emergency_text(obj)
    if emergency:
        lines.append(_kv("Emergency", emergency))
    lines.append(_kv("Change", change_text(spec)))
    lines += config_section(spec, status)
    for key in DOCUMENTATION_FIELDS:
        if spec.get(key) and key != "rollbackPlan":  # a plan is long: `approve` and `audit` show it
            lines.append(_kv(documentation_label(key), spec[key]))
    lines.append(_kv("Authors", ", ".join(authors_of(obj)) or "<unknown>"))
    lines.append(replicas_line(status))
    lines += waves_section(obj)
    lines += consumers_section(obj)
    lines += gates_section(status)
    lines += approvals_section(status)
    lines += policy_section(status)
    lines += conditions_section(status)
    lines += analysis_section(status)
    lines.append(request_line(status))
    return "\n".join(lines)
