"""The status view of one GuardedRollout, as pure functions of the object (a plain dict)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from guarded.api.policy import DOCUMENTATION_FIELDS
from guarded.api.rollout import Phase, Stage, Wave, authors_in, default_waves, phase_in, stage_in
from guarded.cli.tables import format_table, is_emergency, one_line, percent
from guarded.core.policy import DEFAULT_EMERGENCY_BAKE
from guarded.core.waves import canary_replicas

STAGE_DOING = {
    Stage.SCALE_CANARY: "raising the canary",
    Stage.SCALE_STABLE: "lowering the stable",
    Stage.BAKE: "baking",
    Stage.GATE: "waiting for promote",
    Stage.RETIRING: "retiring an old canary",
    Stage.PENDING: "starting",
}
LABEL_WIDTH = 14
PREVIEW_WIDTH = 16


def spec_waves(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The waves as written, or the default ones (1 pod, 10%, 50%, 100%) when the spec has none."""
    waves = spec.get("waves")
    return list(waves) if waves else [w.to_wire() for w in default_waves()]


def documentation_label(field: str) -> str:
    """ "Rollback plan" for the spec field rollbackPlan."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", field).capitalize()


def wave_size(wave: dict[str, Any], total: int | None = None) -> str:
    """ "1 pod", "3 pods", "10%" or "10% (1 pod)" when the target's replica count is known."""
    if wave.get("replicas") is not None:
        n = wave["replicas"]
        return f"{n} pod" if n == 1 else f"{n} pods"
    text = f"{wave.get('weight')}%"
    if total:
        try:
            n = canary_replicas(Wave.model_validate(wave), total)
        except ValidationError:
            return text
        text += f" ({n} pod)" if n == 1 else f" ({n} pods)"
    return text


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


def _kv(label: str, value: Any, width: int = LABEL_WIDTH) -> str:
    return f"{(label + ':').ljust(width - 1)} {one_line(value)}"


def _indent(text: str, by: str = "  ") -> list[str]:
    return [by + line for line in text.splitlines()]


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def target_text(spec: dict[str, Any]) -> str:
    """ "Deployment/shop"."""
    target = spec.get("target") or {}
    return f"{target.get('kind', 'Deployment')}/{target.get('name', '?')}"


def change_summary(spec: dict[str, Any]) -> str:
    change = spec.get("change") or {}
    parts = []
    for c in change.get("containers") or []:
        bits = [f"image {c['image']}"] if c.get("image") else []
        if c.get("env"):
            bits.append(f"{len(c['env'])} env var(s)")
        parts.append(f"{c.get('name')}: {', '.join(bits) or 'unchanged'}")
    if change.get("podTemplatePatch"):
        parts.append("pod template patch")
    return "; ".join(parts)


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
        events, requests = e.get("canaryEvents", 0), e.get("canaryRequests", 0)
        ratio = e.get("canaryRatio")
        if ratio is None and requests:
            ratio = events / requests
        rows.append([e.get("judge", ""), e.get("verdict", ""), f"{_num(events)}/{_num(requests)}", _num(ratio),
                     _num(e.get("referenceRatio")), _num(e.get("thresholdRho")),
                     f"{_num(e.get('logLr', 0.0), 3)} / {_num(e.get('logThreshold', 0.0), 3)}",
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


def authors_of(obj: dict[str, Any]) -> list[str]:
    """Who wrote the change: the status's copy, else the annotation admission stamped on the object."""
    authors = (obj.get("status") or {}).get("authors")
    if authors:
        return [str(a) for a in authors]
    return authors_in((obj.get("metadata") or {}).get("annotations")) or []


def required_approvals(status: dict[str, Any]) -> int | None:
    """The requiredApprovals rule in force (the strictest of the policies), None when no policy sets it."""
    for rule in (status.get("policy") or {}).get("rules") or []:
        if rule.get("rule") == "requiredApprovals":
            try:
                return int(rule.get("value"))
            except (TypeError, ValueError):
                return None
    return None


def person_text(name: Any, groups: list[Any] | None) -> str:
    """ "bob (engineers)": a user and the groups the API server authenticated them with (system: ones left out)."""
    shown = [g for g in groups or [] if not str(g).startswith("system:")]
    return f"{name} ({', '.join(shown)})" if shown else str(name)


def approver_text(approval: dict[str, Any]) -> str:
    return person_text(approval.get("approver", "?"), approval.get("groups"))


def counted_text(approval: dict[str, Any]) -> str:
    """Whether the operator counted an approval it judged: "yes", or "no: " and why not."""
    return "yes" if approval.get("counted") else f"no: {approval.get('reason') or '?'}"


def approvals_headline(status: dict[str, Any]) -> str:
    """ "1/2 counted: bob (engineers)", or "none required" when no policy asks for approvals."""
    counted = [a for a in status.get("approvals") or [] if a.get("counted")]
    required = required_approvals(status)
    names = ", ".join(approver_text(a) for a in counted)
    if required is None:
        return f"{len(counted)} counted (none required): {names}" if counted else "none required"
    return f"{len(counted)}/{required} counted" + (f": {names}" if names else "")


def gate_of(status: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((g for g in status.get("gates") or [] if g.get("gate") == name), None)


GATE_HEADERS = ["Gate", "Passed", "Reason", "Message"]


def gate_row(gate: dict[str, Any]) -> list[Any]:
    return [gate.get("gate"), "yes" if gate.get("passed") else "no", gate.get("reason"), gate.get("message")]


def gates_section(status: dict[str, Any]) -> list[str]:
    gates = status.get("gates") or []
    if not gates:
        return ["Gates:        <not evaluated yet>"]
    headers = [h.upper() for h in GATE_HEADERS]
    return ["Gates:", *_indent(format_table(headers, [gate_row(g) for g in gates]))]


def approvals_section(status: dict[str, Any]) -> list[str]:
    if not status.get("gates") and not status.get("approvals"):
        return [_kv("Approvals", "<not judged yet>")]
    lines = [_kv("Approvals", approvals_headline(status))]
    rows = [[a.get("name"), a.get("approver"), ", ".join(a.get("groups") or []), _num(a.get("revision")),
             counted_text(a)] for a in status.get("approvals") or []]
    if rows:
        lines += _indent(format_table(["APPROVAL", "APPROVER", "GROUPS", "REVISION", "COUNTED"], rows))
    return lines


def policy_section(status: dict[str, Any]) -> list[str]:
    policy = status.get("policy") or {}
    if not policy.get("policies") and not policy.get("rules"):
        return [_kv("Policy", "<none applies>" if status.get("gates") else "<not evaluated yet>")]
    text = ", ".join(policy.get("policies") or []) or "<none applies>"
    if policy.get("safetyResets"):
        text += f" (safety reset active: {', '.join(policy['safetyResets'])})"
    rows = [[r.get("rule"), r.get("value"), ", ".join(r.get("setBy") or [])] for r in policy.get("rules") or []]
    return [_kv("Policy", text), *_indent(format_table(["RULE", "VALUE", "SET BY"], rows))] if rows else \
        [_kv("Policy", text)]


def emergency_text(obj: dict[str, Any]) -> str | None:
    """What an emergency release (spec.emergency) changes, or None for any other rollout."""
    if not is_emergency(obj):
        return None
    rules = ((obj.get("status") or {}).get("policy") or {}).get("rules") or []
    rule = next((r for r in rules if r.get("rule") == "emergencyBake"), None)
    bake = f"{rule.get('value')} (emergencyBake, set by {', '.join(rule.get('setBy') or [])})" if rule \
        else f"{DEFAULT_EMERGENCY_BAKE} (emergencyBake, unless a policy sets it)"
    return (f"yes (break glass): every wave bakes at most {bake}; needs at least one approval by someone "
            "other than its authors")


def generation(obj: dict[str, Any]) -> int:
    """The revision an approval names: the rollout's metadata.generation."""
    return int((obj.get("metadata") or {}).get("generation") or 1)


def approval_preview(obj: dict[str, Any], revision: int) -> str:
    """What `approve` shows before it signs: the change, its documentation and who wrote it."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    facts = [("Target", target_text(spec)),
             ("Change", change_summary(spec)),
             *((documentation_label(key), spec.get(key) or "<none>") for key in DOCUMENTATION_FIELDS),
             ("AI-assisted", "yes" if spec.get("aiAssisted") else "no"),
             *((("Emergency", emergency_text(obj)),) if is_emergency(obj) else ()),
             ("Authors", ", ".join(authors_of(obj)) or "<unknown>"), ("Phase", status.get("phase") or "Pending")]
    head = (f'Approving revision {revision} of guardedrollout "{meta.get("name")}" in namespace '
            f'"{meta.get("namespace")}":')
    return "\n".join([head, *("  " + _kv(label, value, PREVIEW_WIDTH) for label, value in facts)])


def approval_tally(status: dict[str, Any], approval: str, seen: dict[str, Any] | None) -> list[str]:
    """After `approve`: whether the operator counted this approval, and where the rollout's approvals stand."""
    phase, known = status.get("phase") or "Pending", phase_in(status)
    if seen is not None:
        counted = f"yes, for revision {_num(seen.get('revision'))}" if seen.get("counted") else \
            f"no: {seen.get('reason') or 'no reason given'}"
    elif known is not None and known.waiting:
        counted = "not judged by the operator yet (`kubectl guarded status` shows it once it is)"
    else:
        counted = f"not judged: the rollout passed its gates before (phase {phase}); {approval} is kept for the record"
    lines = [_kv("Counted", counted), _kv("Approvals", approvals_headline(status))]
    gate = gate_of(status, "Approvals")
    if gate is not None:
        lines.append(_kv("Gate", f"Approvals {'passed' if gate.get('passed') else 'not passed'} "
                                 f"({gate.get('reason')}): {gate.get('message') or ''}".rstrip(": ")))
    return lines


def status_view(obj: dict[str, Any]) -> str:
    """What `kubectl guarded status NAME` prints."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if status.get("stage"):
        phase += f" (stage {status['stage']})"
    lines = [_kv("Name", meta.get("name")), _kv("Namespace", meta.get("namespace")),
             _kv("Target", target_text(spec)),
             _kv("Phase", phase), _kv("Message", status.get("message") or "")]
    known = phase_in(status)
    if status.get("rollbackReason") and known is not None and known.rollback:
        lines.append(_kv("Rollback", status["rollbackReason"]))
    emergency = emergency_text(obj)
    if emergency:
        lines.append(_kv("Emergency", emergency))
    lines.append(_kv("Change", change_summary(spec)))
    for key in DOCUMENTATION_FIELDS:
        if spec.get(key) and key != "rollbackPlan":  # a plan is long: `approve` and `audit` show it
            lines.append(_kv(documentation_label(key), spec[key]))
    lines.append(_kv("Authors", ", ".join(authors_of(obj)) or "<unknown>"))
    lines.append(replicas_line(status))
    lines += waves_section(obj)
    lines += gates_section(status)
    lines += approvals_section(status)
    lines += policy_section(status)
    lines += conditions_section(status)
    lines += analysis_section(status)
    lines.append(request_line(status))
    return "\n".join(lines)
