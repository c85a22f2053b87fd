"""The loops of the plugin, free of I/O: reading, printing, the clock and sleeping are passed in.

`await_answer` waits until the operator records a request's result in status.lastRequest;
`await_judgement` until it lists a new approval in status.approvals; `await_gates` until it has judged
a new release's gates; `watch` re-renders a rollout until its phase is terminal. All are driven by
fakes in the unit tests.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from guarded.api.common import GROUP, VERSION
from guarded.api.policy import APPROVAL_KIND
from guarded.api.rollout import REQUEST_ACTIONS, REQUEST_ANNOTATION
from guarded.api.stages import Phase, phase_in
from guarded.cli.errors import EXIT_ERROR, EXIT_NO_ANSWER, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from guarded.cli.release import judged
from guarded.cli.view import progress_line, status_view, summary_line

CLEAR_SCREEN = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class Answer:
    code: int
    text: str


def new_request_id() -> str:
    return secrets.token_hex(8)


def request_patch(request_id: str, action: str) -> dict[str, Any]:
    """The merge patch that asks the operator for `action`; the id makes the request count once."""
    if action not in REQUEST_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    value = json.dumps({"id": request_id, "action": action})
    return {"metadata": {"annotations": {REQUEST_ANNOTATION: value}}}


def approval_body(rollout: str, revision: int, comment: str = "") -> dict[str, Any]:
    """A RolloutApproval of `revision` of `rollout`. No approver: admission stamps the authenticated user."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": APPROVAL_KIND,
            "metadata": {"generateName": f"{rollout[:200]}-approval-"},
            "spec": {"rollout": rollout, "revision": revision, "comment": comment}}


def judgement_of(approval: str, status: dict[str, Any] | None) -> dict[str, Any] | None:
    """How the operator judged the approval named `approval`, once status.approvals lists it."""
    return next((a for a in (status or {}).get("approvals") or [] if a.get("name") == approval), None)


def await_judgement(approval: str, read_status: Callable[[], dict[str, Any] | None], wait: float, *,
                    interval: float = 0.5, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Poll until the operator lists `approval` in status.approvals (or the rollout is past its gates, or
    `wait` runs out): (the last status, the judgement or None)."""
    deadline = clock() + wait
    while True:
        status = read_status() or {}
        seen, phase = judgement_of(approval, status), phase_in(status)
        remaining = deadline - clock()
        if seen is not None or remaining <= 0 or phase is None or not phase.waiting:
            return status, seen
        sleep(min(interval, remaining))


def await_gates(read_object: Callable[[], dict[str, Any]], wait: float, *, interval: float = 0.5,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll until the operator has judged the rollout's gates (or `wait` runs out): the last object read."""
    deadline = clock() + wait
    while True:
        obj = read_object()
        remaining = deadline - clock()
        if judged(obj) or remaining <= 0:
            return obj
        sleep(min(interval, remaining))


def answer_of(request_id: str, status: dict[str, Any] | None) -> Answer | None:
    """The operator's answer to this request, if status.lastRequest holds it yet."""
    last = (status or {}).get("lastRequest") or {}
    if last.get("id") != request_id:
        return None
    if last.get("result") == "Accepted":
        return Answer(EXIT_OK, "accepted")
    return Answer(EXIT_REJECTED, f"rejected: {last.get('message') or 'no reason given'}")


def await_answer(request_id: str, read_status: Callable[[], dict[str, Any] | None], wait: float, *,
                 interval: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Answer:
    """Poll `read_status` until status.lastRequest.id is `request_id`, for at most `wait` seconds."""
    if wait <= 0:
        return Answer(EXIT_OK, f"requested (id {request_id}); not waiting for the operator's answer")
    deadline = clock() + wait
    while True:
        answer = answer_of(request_id, read_status())
        if answer is not None:
            return answer
        remaining = deadline - clock()
        if remaining <= 0:
            return Answer(EXIT_NO_ANSWER, f"no answer from the operator within {wait:g}s (request id {request_id}); "
                                          "is the operator running?")
        sleep(min(interval, remaining))


@dataclass(frozen=True)
class WatchResult:
    code: int
    phase: str
    timed_out: bool = False


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%H:%M:%SZ")


def tty_frame(obj: dict[str, Any], now: datetime) -> str:
    """One full screen for a terminal: a headline with the progress bar, then the status view."""
    status = obj.get("status") or {}
    head = f"{status.get('phase') or 'Pending'}  {progress_line(obj)}   (at {_stamp(now)}; Ctrl-C stops watching)"
    return f"{CLEAR_SCREEN}{head}\n\n{status_view(obj)}"


def watch(read_object: Callable[[], dict[str, Any]], emit: Callable[[str], None], *, tty: bool,
          timeout: float | None = None, interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep,
          now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> WatchResult:
    """Render the rollout every `interval` until its phase is terminal (0 if Succeeded, else 1) or timeout (2).

    On a terminal the whole view is redrawn; otherwise one line is emitted per change of state.
    """
    start = clock()
    previous: str | None = None
    while True:
        obj = read_object()
        status = obj.get("status") or {}
        phase, known = status.get("phase") or "Pending", phase_in(status)
        if tty:
            emit(tty_frame(obj, now()))
        else:
            line = summary_line(obj)
            if line != previous:
                emit(f"{_stamp(now())}  {line}")
                previous = line
        if known is not None and known.terminal:
            return WatchResult(EXIT_OK if known == Phase.SUCCEEDED else EXIT_ERROR, phase)
        if timeout is not None:
            remaining = start + timeout - clock()
            if remaining <= 0:
                return WatchResult(EXIT_USAGE, phase, timed_out=True)
            sleep(min(interval, remaining))
        else:
            sleep(interval)
