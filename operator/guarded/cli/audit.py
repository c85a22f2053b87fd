"""The audit report of `kubectl guarded audit`: who changed what, who approved it, what the guardrails
said, what the analysis saw, and how it ended; for a configuration change, the versions of the ConfigMaps and
Secrets it rolled out and the Deployments it moved (names and keys only: never a Secret's data).

Pure functions of plain dicts (GuardedRollouts and RolloutApprovals as the API returns them), the time
range and "now", so the report is built and checked without a cluster. `build_report` selects and
summarises; `render_markdown` writes it for people (a change record, a postmortem); JSON and YAML are
the same report for machines. Waves are numbered from 1 throughout, as in the status view.

The report can only say what the cluster still holds: a deleted rollout is gone, and the operator
keeps the latest entries of status.history and status.analysis.recent only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from guarded.api.policy import DOCUMENTATION_FIELDS
from guarded.api.stages import phase_in
from guarded.cli.gateview import (
    GATE_HEADERS,
    authors_of,
    counted_text,
    emergency_text,
    gate_row,
    generation,
    person_text,
)
from guarded.cli.tables import is_emergency, one_line, parse_time, rfc3339
from guarded.cli.text import (
    change_text,
    config_entries,
    consumers_of,
    documentation_label,
    part_of,
    target_text,
)

REPORT_KIND = "GuardedRolloutAudit"
ANALYSIS_RECORDS = 3  # the newest judgements shown per rollout
EVIDENCE_KEYS = ("judge", "verdict", "canaryEvents", "canaryRequests", "canaryRatio", "referenceEvents",
                 "referenceRequests", "referenceRatio", "thresholdRho", "logLr", "logThreshold", "reason")
CONSUMER_KEYS = ("name", "rollout", "phase", "stage", "waveProgress", "message")
NOT_JUDGED = "not judged by the operator's gates (given after the rollout started, or not seen yet)"


@dataclass(frozen=True, kw_only=True)
class Range:
    """[since, until], either end open when None; times without a zone never match."""

    since: datetime | None = None
    until: datetime | None = None

    def contains(self, stamp: str | None) -> bool:
        when = parse_time(stamp)
        if when is None or when.tzinfo is None:
            return False
        return (self.since is None or when >= self.since) and (self.until is None or when <= self.until)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _wave(index: Any) -> int | None:
    return None if index is None else int(index) + 1


def approvals_for(rollout: dict[str, Any], approvals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RolloutApprovals naming this rollout, oldest first. One that admission tied to another uid
    approved an earlier rollout of the same name, and is left out."""
    meta = _meta(rollout)
    mine = []
    for obj in approvals:
        spec = obj.get("spec") or {}
        if _meta(obj).get("namespace") != meta.get("namespace") or spec.get("rollout") != meta.get("name"):
            continue
        if spec.get("rolloutUid") and meta.get("uid") and spec["rolloutUid"] != meta["uid"]:
            continue
        mine.append(obj)
    return sorted(mine, key=lambda o: (_meta(o).get("creationTimestamp") or "", _meta(o).get("name") or ""))


def approval_records(rollout: dict[str, Any], approvals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every approval of the rollout: the objects, with the operator's judgement (status.approvals) where
    it made one, and judgements of approvals whose object has since been deleted."""
    judged = {a.get("name"): a for a in (rollout.get("status") or {}).get("approvals") or []}
    records = []
    for obj in approvals_for(rollout, approvals):
        spec, name = obj.get("spec") or {}, _meta(obj).get("name")
        seen = judged.pop(name, None) or {}
        records.append({
            "name": name, "approver": spec.get("approver") or seen.get("approver"),
            "groups": list(spec.get("approverGroups") or seen.get("groups") or []),
            "revision": spec.get("revision", seen.get("revision")), "comment": spec.get("comment") or "",
            "created": _meta(obj).get("creationTimestamp"),
            "counted": seen.get("counted") if seen else None,
            "reason": (seen.get("reason") or "") if seen else NOT_JUDGED,
        })
    for name, seen in judged.items():
        records.append({"name": name, "approver": seen.get("approver"), "groups": list(seen.get("groups") or []),
                        "revision": seen.get("revision"), "comment": "", "created": None,
                        "counted": seen.get("counted"), "reason": seen.get("reason") or "",
                        "deleted": True})
    return records


def approvers(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whose approvals counted, each once, with the groups the API server authenticated them with."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("counted") and record.get("approver") not in out:
            out[record["approver"]] = {"name": record["approver"], "groups": list(record["groups"]),
                                       "approval": record["name"], "revision": record["revision"]}
    return list(out.values())


def analysis_records(status: dict[str, Any], rng: Range, limit: int = ANALYSIS_RECORDS) -> list[dict[str, Any]]:
    """The newest judgements in range, with the numbers behind each judge's verdict."""
    recent = [r for r in (status.get("analysis") or {}).get("recent") or [] if rng.contains(r.get("time"))]
    out = []
    for record in recent[-limit:] if limit > 0 else []:
        out.append({
            "time": record.get("time"), "wave": _wave(record.get("wave")), "verdict": record.get("verdict"),
            "intervals": record.get("intervals", 0), "alerts": list(record.get("alerts") or []),
            "judgements": [{"metric": j.get("metric"), "verdict": j.get("verdict"), "reason": j.get("reason", ""),
                            "evidence": [{k: e[k] for k in EVIDENCE_KEYS if k in e} for e in j.get("evidence") or []]}
                           for j in record.get("judgements") or []],
        })
    return out


def timeline(status: dict[str, Any], rng: Range) -> list[dict[str, Any]]:
    return [{"time": h.get("time"), "wave": _wave(h.get("wave")), "reason": h.get("reason"),
             "message": h.get("message", "")}
            for h in status.get("history") or [] if rng.contains(h.get("time"))]


def change_record(spec: dict[str, Any]) -> dict[str, Any]:
    """spec.change as written, with a Secret's change as its names only (the schema has no more; a stray
    field is dropped rather than reported)."""
    change = dict(spec.get("change") or {})
    if "secrets" in change:
        change["secrets"] = [{k: s[k] for k in ("name", "contentFrom") if k in s} for s in change["secrets"] or []]
    return {"summary": change_text(spec), **change}


def in_range(rollout: dict[str, Any], rng: Range) -> bool:
    """Created in the range, or anything recorded in it."""
    history = (rollout.get("status") or {}).get("history") or []
    return rng.contains(_meta(rollout).get("creationTimestamp")) or any(rng.contains(h.get("time")) for h in history)


def rollout_record(rollout: dict[str, Any], approvals: Iterable[dict[str, Any]], rng: Range) -> dict[str, Any]:
    meta, spec, status = _meta(rollout), rollout.get("spec") or {}, rollout.get("status") or {}
    records = approval_records(rollout, approvals)
    gates = list(status.get("gates") or [])
    validation_gate = next((g for g in gates if g.get("gate") == "Validation"), None)
    return {
        "namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid"),
        "revision": generation(rollout), "created": meta.get("creationTimestamp"),
        "target": target_text(spec),
        "change": change_record(spec),
        "partOf": part_of(meta),
        "config": config_entries(spec, status),
        "consumers": [{k: c.get(k) for k in CONSUMER_KEYS} for c in consumers_of(rollout)],
        "authors": authors_of(rollout),
        "approvers": approvers(records),
        "approvals": records,
        "aiAssisted": bool(spec.get("aiAssisted")),
        "emergency": is_emergency(rollout),
        "emergencyDetail": emergency_text(rollout),
        "documentation": {key: spec.get(key) or None for key in DOCUMENTATION_FIELDS},
        "validation": {"passed": None if validation_gate is None else bool(validation_gate.get("passed")),
                       "findings": list(status.get("validation") or [])},
        "gates": gates,
        "policy": status.get("policy"),
        "blastRadius": status.get("blastRadius"),
        "analysis": analysis_records(status, rng),
        "outcome": {"phase": status.get("phase") or "Pending", "message": status.get("message", ""),
                    "rollbackReason": status.get("rollbackReason"), "startedAt": status.get("startedAt"),
                    "completedAt": status.get("completedAt"), "lastRequest": status.get("lastRequest")},
        "timeline": timeline(status, rng),
    }


def build_report(rollouts: Iterable[dict[str, Any]], approvals: Iterable[dict[str, Any]], *, rng: Range,
                 now: datetime, scope: str) -> dict[str, Any]:
    """The report on every rollout created, or with anything recorded, in `rng`; `scope` says where from."""
    approvals = list(approvals)
    chosen = sorted((r for r in rollouts if in_range(r, rng)),
                    key=lambda r: (_meta(r).get("namespace") or "", _meta(r).get("creationTimestamp") or "",
                                   _meta(r).get("name") or ""))
    return {
        "kind": REPORT_KIND, "generatedAt": rfc3339(now), "scope": scope,
        "since": None if rng.since is None else rfc3339(rng.since),
        "until": None if rng.until is None else rfc3339(rng.until),
        "rollouts": [rollout_record(r, approvals, rng) for r in chosen],
    }


# -- Markdown ------------------------------------------------------------------------------

def cell(value: Any) -> str:
    """A Markdown table cell: one line, pipes escaped, empty as a dash."""
    text = one_line(value).replace("|", "\\|")
    return text or "-"


def md_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def _who(entry: dict[str, Any]) -> str:
    return person_text(entry.get("name") or entry.get("approver"), entry.get("groups"))


def outcome_text(outcome: dict[str, Any]) -> str:
    text, phase = outcome.get("phase") or "Pending", phase_in(outcome)
    if outcome.get("rollbackReason") and phase is not None and phase.rollback:
        text += f" ({outcome['rollbackReason']})"
    if outcome.get("completedAt"):
        text += f" at {outcome['completedAt']}"
    return text


def _counted(record: dict[str, Any]) -> str:
    return "not judged" if record.get("counted") is None else counted_text(record)


def _section(title: str, body: list[str], empty: str) -> list[str]:
    return [f"### {title}", "", *(body or [empty]), ""]


def _facts_md(r: dict[str, Any]) -> list[str]:
    docs = r["documentation"]
    facts = [("Target", r["target"]), ("Change", r["change"]["summary"]), ("Revision", r["revision"]),
             ("Created", r["created"]), ("Authors", ", ".join(r["authors"]) or "unknown"),
             ("Approved by", ", ".join(_who(a) for a in r["approvers"]) or "nobody"),
             ("AI-assisted", "yes" if r["aiAssisted"] else "no"),
             ("Emergency", r.get("emergencyDetail") or "no"),
             *((("Part of", r["partOf"]),) if r.get("partOf") else ()),
             *((documentation_label(key), docs.get(key)) for key in DOCUMENTATION_FIELDS),
             ("Outcome", outcome_text(r["outcome"])), ("Started", r["outcome"].get("startedAt")),
             ("Message", r["outcome"].get("message"))]
    return [*md_table(["Fact", "Value"], facts), ""]


def _config_md(r: dict[str, Any]) -> list[str]:
    """The versions rolled out and the Deployments moved; nothing for a rollout that changes no configuration."""
    if not r.get("config") and not r.get("consumers"):
        return []
    body = md_table(["Kind", "Name", "Version", "New content"], [
        [c["kind"], c["name"], c.get("version") or "not made", _content(c)] for c in r["config"]]) \
        if r.get("config") else []
    if r.get("consumers"):
        body += ["", *md_table(["Deployment", "Rollout", "Phase", "Stage", "Wave"], [
            [c["name"], c.get("rollout"), c.get("phase"), c.get("stage"), c.get("waveProgress")]
            for c in r["consumers"]])]
    return _section("Configuration and consumers", body, "")


def _content(c: dict[str, Any]) -> str:
    """Keys set and removed, or the object whose whole content it is: names, never values."""
    bits = [f"all of {c['kind']} {c['contentFrom']}"] if c.get("contentFrom") else []
    bits += [f"sets {', '.join(c['keys'])}"] if c.get("keys") else []
    bits += [f"removes {', '.join(c['removedKeys'])}"] if c.get("removedKeys") else []
    return "; ".join(bits)


def _approvals_md(r: dict[str, Any]) -> list[str]:
    rows = [[a["name"] + (" (deleted)" if a.get("deleted") else ""), a["approver"], ", ".join(a["groups"]),
             a["revision"], _counted(a), a["comment"], a["created"]] for a in r["approvals"]]
    body = md_table(["Approval", "Approver", "Groups", "Revision", "Counted", "Comment", "Created"], rows) \
        if rows else []
    return _section("Approvals", body, "None.")


def _gates_md(r: dict[str, Any]) -> list[str]:
    body = md_table(GATE_HEADERS, [gate_row(g) for g in r["gates"]]) if r["gates"] else ["Not evaluated."]
    findings = r["validation"]["findings"]
    body += ["", "Validation findings: none."] if not findings else [
        "", "Validation findings:", "",
        *(f"- `{f.get('field')}` ({f.get('rule')}): {one_line(f.get('message'))}" for f in findings)]
    return _section("Gates", body, "")


def _policy_md(r: dict[str, Any]) -> list[str]:
    policy = r["policy"] or {}
    if not policy.get("policies"):
        return _section("Policy", [], "No policy applied.")
    resets = policy.get("safetyResets") or []
    body = ["Policies: " + ", ".join(policy["policies"]) +
            (f" (safety reset active: {', '.join(resets)})" if resets else "") + "."]
    if policy.get("rules"):
        body += ["", *md_table(["Rule", "Value", "Set by"], [[x.get("rule"), x.get("value"),
                                                             ", ".join(x.get("setBy") or [])]
                                                            for x in policy["rules"]])]
    return _section("Policy", body, "")


def _blast_md(r: dict[str, Any]) -> list[str]:
    blast = r["blastRadius"]
    if not blast:
        return _section("Blast radius", [], "Not assessed.")
    share = "" if blast.get("sharePercent") is None else \
        f", {blast['sharePercent']}% of the {blast.get('servicePods')} pods behind its Services"
    where = ", ".join(blast.get("namespaces") or []) or "?"
    return _section("Blast radius", [f"{blast.get('pods')} pods{share}, in {where}; "
                                     f"{'high' if blast.get('high') else 'not high'}: {one_line(blast.get('reason'))}"],
                    "")


def _analysis_md(r: dict[str, Any]) -> list[str]:
    rows = []
    for record in r["analysis"]:
        head = [record["time"], _num(record["wave"]), record["verdict"]]
        if record["alerts"]:
            rows.append([*head, "alerts", "-", "Fail", "", "", "", "", "", "firing: " + ", ".join(record["alerts"])])
        for j in record["judgements"]:
            if not j["evidence"]:
                rows.append([*head, j["metric"], "-", j["verdict"], "", "", "", "", "", j["reason"]])
            for e in j["evidence"]:
                rows.append([*head, j["metric"], e.get("judge"), e.get("verdict"),
                             f"{_num(e.get('canaryEvents'))}/{_num(e.get('canaryRequests'))}",
                             _num(e.get("canaryRatio")), _num(e.get("referenceRatio")), _num(e.get("thresholdRho")),
                             f"{_num(e.get('logLr'))} / {_num(e.get('logThreshold'))}", e.get("reason")])
    body = md_table(["Time", "Wave", "Verdict", "Metric", "Judge", "Judge verdict", "Canary events/requests",
                     "Canary ratio", "Reference ratio", "Rho", "log LR / threshold", "Reason"], rows) if rows else []
    return _section(f"Analysis (the newest {ANALYSIS_RECORDS} judgements in range)", body, "None recorded.")


def _timeline_md(r: dict[str, Any]) -> list[str]:
    body = md_table(["Time", "Wave", "Reason", "Message"],
                    [[h["time"], _num(h["wave"]), h["reason"], h["message"]] for h in r["timeline"]]) \
        if r["timeline"] else []
    return _section("Timeline", body, "Nothing recorded in range.")


def _rollout_cell(r: dict[str, Any]) -> str:
    """ "shop/shop-2-0-0", marked when it was an emergency release."""
    return f"{r['namespace']}/{r['name']}" + (" (EMERGENCY)" if r.get("emergency") else "")


def rollout_markdown(r: dict[str, Any]) -> list[str]:
    """One rollout's section: its facts, configuration and consumers (if any), then approvals, gates, policy,
    blast radius, analysis, timeline."""
    return [f"## {_rollout_cell(r)}: {outcome_text(r['outcome'])}", "", *_facts_md(r), *_config_md(r),
            *_approvals_md(r), *_gates_md(r), *_policy_md(r), *_blast_md(r), *_analysis_md(r), *_timeline_md(r)]


def render_markdown(report: dict[str, Any]) -> str:
    since, until = report.get("since"), report.get("until")
    span = f"from {since or 'the beginning'} to {until or 'now'}"
    rollouts = report["rollouts"]
    lines = ["# GuardedRollout audit", "",
             f"Scope: {report['scope']}, {span}. Generated {report['generatedAt']}. "
             f"{len(rollouts)} rollout{'' if len(rollouts) == 1 else 's'}.", ""]
    if not rollouts:
        return "\n".join([*lines, "No rollout was created or changed in this range."])
    lines += md_table(["Rollout", "Outcome", "Authors", "Approved by", "AI-assisted", "Created"],
                      [[_rollout_cell(r), outcome_text(r["outcome"]), ", ".join(r["authors"]),
                        ", ".join(_who(a) for a in r["approvers"]), "yes" if r["aiAssisted"] else "no", r["created"]]
                       for r in rollouts])
    lines.append("")
    for r in rollouts:
        lines += rollout_markdown(r)
    return "\n".join(lines).rstrip("\n")
