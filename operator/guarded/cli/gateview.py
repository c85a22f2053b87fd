"""The guardrails' part of the plugin's views: authors, approvals, gates, policy rules, break glass."""

from __future__ import annotations

from typing import Any

from guarded.api.policy import DOCUMENTATION_FIELDS
from guarded.api.rollout import authors_in
from guarded.api.stages import phase_in
from guarded.cli.tables import format_table, is_emergency
from guarded.cli.text import (
    PREVIEW_WIDTH,
    _indent,
    _kv,
    _num,
    change_summary,
    documentation_label,
    target_text,
)
from guarded.core.policy import DEFAULT_EMERGENCY_BAKE


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
