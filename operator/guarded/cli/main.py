"""Entry point of `kubectl-guarded` (kubectl runs it as `kubectl guarded`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from guarded.cli.errors import EXIT_INTERRUPTED, CliError
from guarded.cli.parser import parse_args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(argv) if argv is not None else None)
    # Imported after parsing so that --help and usage errors stay fast (the Kubernetes client is slow to load).
    from guarded.cli.commands import run
    from guarded.cli.kube import Kube
    try:
        kube = Kube(args.kubeconfig, args.context)
        return run(kube, args, sys.stdout, sys.stderr)
    except CliError as exc:
        sys.stdout.flush()
        print(exc.message, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as kubectl does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
