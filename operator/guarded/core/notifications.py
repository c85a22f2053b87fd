"""What to tell people about one persisted decision: a pure reading of (status before, status after).

Why from the persisted status rather than from the engine's moves: the status write is a compare-and-swap
on the object's resourceVersion, so exactly one write records a transition. Whoever made that write (one
replica, one reconcile) is the one that notifies; a conflicted decision is thrown away before it is read
here, and a restarted or newly active replica reads the transition as already done. That is "at most once
per transition" with no extra state and no extra write. The price is that a crash between the write and the
delivery loses those messages (at most once, not at least once: a duplicate page is worse than none here,
and the rollout's status and Events keep the full account).

A transition is read from the history entries the decision added (each stage move the engine makes records
one, core/draft.Draft.record) and from the stage crossing into a rollback. The bodies sent to a Slack-compatible
incoming webhook and to a generic JSON webhook are built here too, so they are table-tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guarded.api.policy import NOTIFY_EVENTS, NotifyEvent
from guarded.api.reasons import Reason
from guarded.api.rollout import GuardedRolloutStatus, HistoryEntry
from guarded.api.stages import Stage

SCHEMA = "rollouts.guarded.dev/notification/v1"  # the JSON webhook body's version: fields are only ever added
_ROLLBACK_STAGES = frozenset({Stage.ROLLING_BACK, Stage.ROLLED_BACK})
_TEXT_LIMIT = 1000  # one line in a chat: the status and `kubectl guarded status` hold the rest

# The history reasons that are a notification of their own (a rollback is read from the stage crossing).
_BY_REASON: dict[str, NotifyEvent] = {
    Reason.AWAITING_APPROVAL: "AwaitingApproval",
    Reason.BLOCKED: "Blocked",
    Reason.ROLLOUT_STARTED: "Started",
    Reason.WAVE_STARTED: "WaveStarted",
    Reason.SUCCEEDED: "Promoted",
    Reason.EMERGENCY_RELEASE: "EmergencyRelease",
}
_TITLES: dict[NotifyEvent, str] = {
    "AwaitingApproval": "awaits approval", "Blocked": "is blocked", "Started": "started",
    "WaveStarted": "moved to wave", "RolledBack": "is rolled back", "Promoted": "is promoted",
    "EmergencyRelease": "is an emergency release",
}
_SLACK_ICONS: dict[NotifyEvent, str] = {
    "AwaitingApproval": ":raising_hand:", "Blocked": ":no_entry:", "Started": ":arrow_forward:",
    "WaveStarted": ":ocean:", "RolledBack": ":rotating_light:", "Promoted": ":white_check_mark:",
    "EmergencyRelease": ":fire_engine:",
}
assert set(_TITLES) == set(NOTIFY_EVENTS)


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One message about one transition of one rollout, the same for every sink."""

    event: NotifyEvent
    namespace: str
    rollout: str
    target: str
    phase: str
    wave: str | None          # "2/4" (1-based), when the rollout is in a wave
    revision: str | None
    time: str                 # when the transition was recorded (its history entry)
    message: str              # one line: what happened, in the engine's words
    evidence: str | None = None      # a rollback's: why, in one line (the metrics' verdicts, the alert, ...)
    approvers: str | None = None     # awaiting approval: who may approve
    command: str | None = None       # what to run about it

    @property
    def key(self) -> str:
        """Stable across retries of one delivery: a receiver may drop a repeat by it."""
        return f"{self.namespace}/{self.rollout}/{self.revision or '-'}/{self.event}/{self.time}"

    @property
    def title(self) -> str:
        wave = f" {self.wave}" if self.event == "WaveStarted" and self.wave else ""
        return f"GuardedRollout {self.namespace}/{self.rollout} {_TITLES[self.event]}{wave}"


def one_line(text: str, limit: int = _TEXT_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def added_entries(before: Sequence[HistoryEntry], after: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """The entries a decision appended to a history that is kept to its newest N (the oldest drop off)."""
    for dropped in range(len(before) + 1):
        kept = list(before[dropped:])
        if list(after[:len(kept)]) == kept:
            return list(after[len(kept):])
    return list(after)  # nothing in common: all of it is new


def approvers(status: GuardedRolloutStatus) -> str:
    """Who may approve, as the policies in force say it (status.policy.rules) and the authors exclude."""
    rules = {r.rule: r.value for r in (status.policy.rules if status.policy else [])}
    senior = [r.value.replace(",", ", ") for r in (status.policy.rules if status.policy else [])
              if r.rule == "seniorGroups"]
    authors = ", ".join(status.authors) or "unknown"
    parts = [f"{rules.get('requiredApprovals', '1')} approval(s) by anyone but the authors ({authors})"]
    if senior:
        parts.append(f"a member of {' or '.join(senior)} when the change is AI-assisted or high blast radius")
    return "; ".join(parts)


def of_decision(*, namespace: str, name: str, target: str, before: GuardedRolloutStatus,
                after: GuardedRolloutStatus) -> tuple[Notification, ...]:
    """The notifications of one persisted decision, in the order its transitions happened."""
    entries = added_entries(before.history, after.history)
    time = entries[-1].time if entries else (after.completed_at or after.started_at or "")
    rollback = after.stage in _ROLLBACK_STAGES and before.stage not in _ROLLBACK_STAGES

    def note(event: NotifyEvent, message: str, at: str, **extra: Any) -> Notification:
        return Notification(event=event, namespace=namespace, rollout=name, target=target, phase=str(after.phase),
                            wave=after.wave_progress, revision=after.revision, time=at, message=one_line(message),
                            **extra)

    out: list[Notification] = []
    started = any(e.reason == Reason.ROLLOUT_STARTED for e in entries)
    for e in entries:
        event = _BY_REASON.get(e.reason)
        if event is None or (event == "WaveStarted" and started):  # a start names its first wave itself
            continue
        if event == "Started":
            wave = next((w.message for w in entries if w.reason == Reason.WAVE_STARTED), "")
            out.append(note(event, f"{e.message}; {wave}" if wave else e.message, e.time))
        elif event == "AwaitingApproval":
            out.append(note(event, e.message, e.time, approvers=approvers(after),
                            command=f"kubectl guarded approve {name} -n {namespace}"))
        elif event == "Blocked":
            out.append(note(event, e.message, e.time, command=f"kubectl guarded status {name} -n {namespace}"))
        else:
            out.append(note(event, e.message, e.time))
    if rollback:
        # The RollingBack entry says why (the reason, the wave, the failing metrics' verdicts or the alert);
        # a rollout that ends without passing through RollingBack (an abort before it started) says it last.
        why = next((e for e in entries if e.reason == Reason.ROLLING_BACK), entries[-1] if entries else None)
        evidence = one_line(why.message if why else after.message)
        reason = after.rollback_reason or "RolledBack"
        out.append(note("RolledBack", f"{reason}: {evidence}" if not evidence.startswith(reason) else evidence,
                        why.time if why else time, evidence=evidence,
                        command=f"kubectl guarded history {name} -n {namespace}"))
    return tuple(out)


def wanted(notification: Notification, events: Sequence[str]) -> bool:
    """Whether a sink that asked for `events` (none: all) is sent this one."""
    return not events or notification.event in events


# -- the bodies sent --------------------------------------------------------------------------------

def webhook_body(n: Notification) -> dict[str, Any]:
    """The generic JSON webhook's body (docs/notifications.md): stable field names, only ever added to."""
    body: dict[str, Any] = {
        "schema": SCHEMA, "key": n.key, "event": n.event, "namespace": n.namespace, "rollout": n.rollout,
        "target": n.target, "phase": n.phase, "wave": n.wave, "revision": n.revision, "time": n.time,
        "title": n.title, "message": n.message, "evidence": n.evidence, "approvers": n.approvers,
        "command": n.command,
    }
    return body


def slack_text(n: Notification) -> str:
    lines = [f"{_SLACK_ICONS[n.event]} *{n.title}*", n.message]
    if n.evidence and n.evidence not in n.message:
        lines.append(f"Evidence: {n.evidence}")
    if n.approvers:
        lines.append(f"Who may approve: {n.approvers}")
    if n.command:
        lines.append(f"`{n.command}`")
    return "\n".join(lines)


def slack_body(n: Notification) -> dict[str, Any]:
    """A Slack-compatible incoming webhook's body: `text` alone is what every compatible receiver reads
    (Mattermost, Rocket.Chat, ...); the blocks add a context line for Slack itself."""
    context = " | ".join(x for x in (f"target {n.target}", f"phase {n.phase}",
                                     f"wave {n.wave}" if n.wave else "",
                                     f"revision {n.revision}" if n.revision else "", n.time) if x)
    return {"text": slack_text(n), "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": slack_text(n)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]}
