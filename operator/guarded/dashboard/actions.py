"""The buttons: each runs the plugin's own command (`kubectl guarded approve`, `promote`, ...) as the user,
with the arguments the page sends, and returns what the command printed and its exit code.

So a refusal reads exactly as in a terminal: the API server's message (an admission webhook's denial,
RBAC's Forbidden) or the operator's answer in status.lastRequest.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from typing import Any

from guarded.cli.commands import Io, cmd_approve, cmd_request
from guarded.cli.errors import EXIT_OK, CliError
from guarded.cli.kube import Kube
from guarded.dashboard.model import ACTIONS

APPROVE_WAIT = 10.0   # seconds to wait for the operator to count an approval (as `approve`'s default)
REQUEST_WAIT = 15.0   # seconds to wait for the operator's answer to a request (as the requests' default)
COMMENT_LIMIT = 1000


class BadAction(ValueError):
    """The page asked for something no button does (a usage error: HTTP 400)."""


@dataclass(frozen=True)
class Outcome:
    code: int       # the plugin's exit code: 0 done, 1 error, 3 refused or rejected, 4 no answer
    output: str     # what the command printed (its stdout, then its stderr)

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK


def arguments(action: str, namespace: str, name: str, body: dict[str, Any]) -> argparse.Namespace:
    """The arguments the plugin's parser would give the command for this button."""
    if action not in ACTIONS:
        raise BadAction(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if action == "approve":
        comment = body.get("comment", "")
        revision = body.get("revision")
        if not isinstance(comment, str) or len(comment) > COMMENT_LIMIT:
            raise BadAction(f"comment: text of at most {COMMENT_LIMIT} characters")
        if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool) or revision < 1):
            raise BadAction("revision: the rollout's metadata.generation (1 or more)")
        return argparse.Namespace(command="approve", namespace=namespace, name=name, comment=comment,
                                  revision=revision, wait=APPROVE_WAIT)
    command, full = ("promote", True) if action == "promote-full" else (action, False)
    return argparse.Namespace(command=command, namespace=namespace, name=name, full=full, wait=REQUEST_WAIT)


def run_action(kube: Kube, action: str, namespace: str, name: str, body: dict[str, Any]) -> Outcome:
    """Run the button's command (blocking: call it from a worker thread)."""
    args = arguments(action, namespace, name, body)
    out, err = io.StringIO(), io.StringIO()
    command = cmd_approve if args.command == "approve" else cmd_request
    try:
        code = command(kube, args, Io(out, err))
    except CliError as exc:
        err.write(exc.message + "\n")
        code = exc.code
    return Outcome(code, (out.getvalue() + err.getvalue()).rstrip("\n"))
