"""Exit codes of `kubectl guarded`, and the error every failure is reported as (never a traceback)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1          # an API error, or a watched rollout that ended other than Succeeded
EXIT_USAGE = 2          # argparse's own code; also `watch --timeout` running out
EXIT_REJECTED = 3       # the operator rejected the request, or its admission webhook refused an approval
EXIT_NO_ANSWER = 4      # the operator did not answer within --wait
EXIT_INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure to report on stderr, with the process's exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code
