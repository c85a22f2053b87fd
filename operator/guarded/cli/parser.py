"""Arguments and help of `kubectl guarded` (argparse: usage errors exit 2)."""

from __future__ import annotations

import argparse
import textwrap

PROG = "kubectl guarded"
OUTPUTS = ("table", "json", "yaml")

EXIT_CODES = """exit codes:
  0  done (watch: the rollout Succeeded; requests: accepted)
  1  an error (not found, forbidden, unreachable), or a watched rollout that ended RolledBack or Failed
  2  usage error, or watch --timeout ran out
  3  the operator rejected the request
  4  the operator did not answer the request within --wait seconds"""

MAIN_EPILOG = f"""examples:
  kubectl guarded list -A                       every GuardedRollout in every namespace
  kubectl guarded status shop-2-0-0 -n shop     phase, waves, conditions, last analysis
  kubectl guarded watch shop-2-0-0 --timeout 600
  kubectl guarded promote shop-2-0-0            skip the current bake or manual gate
  kubectl guarded abort shop-2-0-0              roll back now

Global flags (-n, --context, --kubeconfig) may come before or after the command.
"{PROG} COMMAND --help" describes each command.

{EXIT_CODES}"""

REQUESTS = {
    "abort": ("roll the rollout back now: the canary is removed and the stable restored",
              "kubectl guarded abort shop-2-0-0 -n shop"),
    "pause": ("pause the rollout; the bake clock stops while paused",
              "kubectl guarded pause shop-2-0-0 -n shop"),
    "resume": ("resume a paused rollout", "kubectl guarded resume shop-2-0-0 -n shop"),
    "promote": ("skip the current wave's bake or manual gate (--full: skip every remaining wave)",
                "kubectl guarded promote shop-2-0-0 -n shop\n  kubectl guarded promote shop-2-0-0 --full"),
    "retry": ("start a rolled-back rollout again from its first wave",
              "kubectl guarded retry shop-2-0-0 -n shop --wait 30"),
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break "promote-full" or "--all-namespaces" at their hyphens.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def add_connection_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    """kubectl's connection flags; on commands they default to SUPPRESS so values given earlier survive."""
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("connection (as in kubectl)")
    group.add_argument("-n", "--namespace", metavar="NS", default=default,
                       help="namespace of the GuardedRollout (default: the context's namespace, else \"default\")")
    group.add_argument("--context", metavar="NAME", default=default,
                       help="kubeconfig context to use (default: the current context)")
    group.add_argument("--kubeconfig", metavar="PATH", default=default,
                       help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")


def add_output_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table", metavar="FORMAT",
                        help=f"output format: table (default, human-readable), json or yaml ({what})")


def _command(sub: argparse._SubParsersAction, name: str, help_text: str, epilog: str,
             aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, aliases=list(aliases), help=help_text, description=help_text[0].upper() +
                            help_text[1:] + ".", epilog=epilog, formatter_class=_Formatter)
    parser.set_defaults(command=name)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter, epilog=MAIN_EPILOG,
        description=textwrap.fill(
            "Inspect, watch and steer GuardedRollouts (rollouts.guarded.dev/v1alpha1). Requests (abort, pause, "
            "resume, promote, retry) are handed to the operator through the rollouts.guarded.dev/request "
            "annotation; the command waits for the operator's answer.", 100, break_on_hyphens=False))
    add_connection_flags(parser, top=True)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True)

    p = _command(sub, "list", "list GuardedRollouts with their phase, wave and canary share",
                 "examples:\n  kubectl guarded list -n shop\n  kubectl guarded ls -A\n"
                 "  kubectl guarded list -o yaml\n\ncolumns: [NAMESPACE] NAME TARGET PHASE WAVE CANARY AGE MESSAGE",
                 aliases=("ls",))
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="list across all namespaces (adds a NAMESPACE column)")
    add_output_flag(p, "a v1 List of the objects")
    add_connection_flags(p, top=False)

    p = _command(sub, "status", "show one GuardedRollout: phase, waves, replicas, conditions, last analysis "
                 "and last request",
                 "examples:\n  kubectl guarded status shop-2-0-0 -n shop\n  kubectl guarded status shop-2-0-0 -o json")
    p.add_argument("name", metavar="NAME", help="name of the GuardedRollout")
    add_output_flag(p, "the whole object")
    add_connection_flags(p, top=False)

    p = _command(sub, "history", "show the recorded transitions of a GuardedRollout (TIME, WAVE, REASON, MESSAGE)",
                 "examples:\n  kubectl guarded history shop-2-0-0 -n shop\n"
                 "  kubectl guarded history shop-2-0-0 -o yaml\n\nWAVE is 1-based; the history is bounded "
                 "(the oldest entries are dropped).")
    p.add_argument("name", metavar="NAME", help="name of the GuardedRollout")
    add_output_flag(p, "the list of history entries")
    add_connection_flags(p, top=False)

    p = _command(sub, "watch", "follow a GuardedRollout until it Succeeded, RolledBack or Failed",
                 "examples:\n  kubectl guarded watch shop-2-0-0 -n shop\n"
                 "  kubectl guarded watch shop-2-0-0 --timeout 600 | tee rollout.log\n\n"
                 "On a terminal the status view is redrawn every second with a progress bar through the waves;\n"
                 "otherwise one line is printed per change.\n"
                 "exit codes: 0 Succeeded, 1 RolledBack or Failed (or an error), 2 --timeout ran out")
    p.add_argument("name", metavar="NAME", help="name of the GuardedRollout")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="give up after this many seconds and exit 2 (default: wait as long as it takes)")
    add_connection_flags(p, top=False)

    for action, (help_text, example) in REQUESTS.items():
        p = _command(sub, action, help_text,
                     f"examples:\n  {example}\n\nThe request is a merge patch of the annotation "
                     "rollouts.guarded.dev/request ({\"id\": ..., \"action\": ...});\nthe operator records its "
                     "answer in status.lastRequest.\n"
                     "exit codes: 0 accepted, 1 error, 3 rejected (the reason is printed), 4 no answer in time")
        p.add_argument("name", metavar="NAME", help="name of the GuardedRollout")
        if action == "promote":
            p.add_argument("--full", action="store_true",
                           help="skip every remaining wave and promote the change to the target now "
                                "(action promote-full)")
        p.add_argument("--wait", type=float, metavar="SECONDS", default=15.0,
                       help="how long to wait for the operator's answer (default: 15; 0: do not wait)")
        add_connection_flags(p, top=False)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if getattr(args, "wait", 0) < 0 or (getattr(args, "timeout", None) or 0) < 0:
        build_parser().error("--wait and --timeout must not be negative")
    return args


def request_action(args: argparse.Namespace) -> str:
    """The action sent for a request command ("promote --full" is promote-full)."""
    return "promote-full" if args.command == "promote" and args.full else args.command
