"""Arguments and help of `kubectl guarded` (argparse: usage errors exit 2)."""

from __future__ import annotations

import argparse
import os
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from guarded.cli.tables import parse_bound

PROG = "kubectl guarded"
OUTPUTS = ("table", "json", "yaml")
AUDIT_OUTPUTS = ("markdown", "json", "yaml")

EXIT_CODES = """exit codes:
  0  done (watch: the rollout Succeeded; requests: accepted; approve: the approval was created;
     release: the rollout was created, and with --watch Succeeded)
  1  an error (not found, forbidden by RBAC, unreachable), or a watched rollout that ended RolledBack or Failed
  2  usage error, or watch --timeout ran out
  3  the operator rejected the request, or its admission webhook refused the approval (e.g. your own change)
     or the release
  4  the operator did not answer the request within --wait seconds"""

MAIN_EPILOG = f"""examples:
  kubectl guarded list -A                       every GuardedRollout in every namespace
  kubectl guarded status shop-2-0-0 -n shop     phase, waves, conditions, last analysis
  kubectl guarded watch shop-2-0-0 --timeout 600
  kubectl guarded promote shop-2-0-0            skip the current bake or manual gate
  kubectl guarded abort shop-2-0-0              roll back now
  kubectl guarded approve shop-2-0-0 --comment "reviewed, LGTM"
  kubectl guarded audit -A --since 24h > audit.md
  kubectl guarded release shop --image app=registry.example/shop:2.2.0 --ticket SHOP-99 --watch

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


@dataclass
class ConfigFlags:
    """One `release --config NAME` or `--secret NAME` with the --from-file, --from-literal and --remove-key
    flags that follow it (up to the next --config/--secret), in the order given."""

    kind: str                                                          # "ConfigMap" or "Secret"
    name: str
    sources: list[tuple[str, str]] = field(default_factory=list)      # ("--from-file", "[KEY=]PATH"), ...
    remove: list[str] = field(default_factory=list)


class _ConfigObject(argparse.Action):
    """--config NAME / --secret NAME: opens a group in args.config that the flags after it fill. argparse runs
    actions in command-line order, so a group holds exactly the --from-* flags written after its flag."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        groups = list(getattr(namespace, self.dest, None) or [])
        groups.append(ConfigFlags(kind=self.const, name=str(values)))
        setattr(namespace, self.dest, groups)


class _ConfigContent(argparse.Action):
    """--from-file, --from-literal, --remove-key: added to the group of the last --config/--secret."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        groups = getattr(namespace, self.dest, None)
        flag = self.option_strings[0]
        if not groups:
            raise argparse.ArgumentError(self, f"give --config NAME or --secret NAME before {flag}: each --from-file, "
                                               "--from-literal and --remove-key applies to the --config or --secret "
                                               "written before it")
        if flag == "--remove-key":
            groups[-1].remove.append(str(values))
        else:
            groups[-1].sources.append((flag, str(values)))


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
            "Release changes as GuardedRollouts (rollouts.guarded.dev/v1alpha1), inspect, watch, approve and "
            "steer them, and report on them. Requests (abort, pause, resume, promote, retry) are handed to the "
            "operator through the "
            "rollouts.guarded.dev/request annotation; the command waits for the operator's answer. An approval is "
            "a RolloutApproval whose approver the operator's admission webhook takes from your identity.", 100,
            break_on_hyphens=False))
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

    p = _command(sub, "status", "show one GuardedRollout: phase, waves, gates, approvals, policy, conditions, "
                 "analysis, last request",
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

    p = _command(sub, "approve", "approve a GuardedRollout's current revision as yourself (creates a "
                 "RolloutApproval)",
                 "examples:\n  kubectl guarded approve shop-2-0-0 -n shop\n"
                 "  kubectl guarded approve shop-2-0-0 --comment \"reviewed SHOP-1234; rollback plan is sound\"\n"
                 "  kubectl guarded approve shop-2-0-0 --revision 3   # only if the spec is still the one you "
                 "reviewed\n\n"
                 "Shows the change, its documentation and its authors, then creates a RolloutApproval named\n"
                 "<NAME>-approval-<random> with spec {rollout, revision, comment}. The approver and their groups\n"
                 "are never sent: the operator's admission webhook records the identity the API server\n"
                 "authenticated, and refuses an approval by an author of the change or of a revision that is not\n"
                 "the current one. Then it waits for the operator to count the approval and prints the tally.\n"
                 "exit codes: 0 approved, 1 error (not found, forbidden by RBAC), 3 refused by the operator's\n"
                 "admission webhook (the reason is printed)")
    p.add_argument("name", metavar="NAME", help="name of the GuardedRollout")
    p.add_argument("--comment", metavar="TEXT", default="", help="why you approve, kept with the approval")
    p.add_argument("--revision", type=int, metavar="N", default=None,
                   help="the revision (metadata.generation) you reviewed; refused unless it is still the current "
                        "one (default: the current one)")
    p.add_argument("--wait", type=float, metavar="SECONDS", default=10.0,
                   help="how long to wait for the operator to count the approval (default: 10; 0: do not wait)")
    add_connection_flags(p, top=False)

    p = _command(sub, "release", "create a GuardedRollout of a new image, environment or configuration for a "
                 "Deployment, and say what it waits for",
                 "examples:\n"
                 "  kubectl guarded release shop --image app=registry.example/shop:2.2.0 -n shop \\\n"
                 "      --description \"New checkout flow\" --ticket SHOP-1234 \\\n"
                 "      --rollback-plan \"abort; the stable is untouched\"\n"
                 "  kubectl guarded release shop --env app:CHECKOUT_V2=true --wave 1:2m --wave 50%:5m:gate "
                 "--wave 100%\n"
                 "  kubectl guarded release shop --image app=registry.example/shop:2.2.1 --emergency --ticket INC-42 "
                 "--watch\n"
                 "  kubectl guarded release shop --image app=registry.example/shop:2.2.0 --dry-run -o yaml\n"
                 "  kubectl guarded release shop --config shop-config --from-file settings.json \\\n"
                 "      --from-literal LOG_LEVEL=debug --remove-key legacy.ini\n"
                 "  kubectl guarded release shop --secret shop-secret --from-literal api-token=\"$TOKEN\" \\\n"
                 "      --config shop-config --from-file flags=./flags.json --image app=registry.example/shop:2.3.0\n\n"
                 "The GuardedRollout is named <TARGET>-<hash of its spec> (--name to choose), so asking for the same\n"
                 "release twice creates it once. Its waves are the --wave flags, else the releaseDefaults of the\n"
                 "RolloutPolicies that guard the target (when you may read them; also their analysis), else the\n"
                 "GuardedRollout default (1 pod, 10%, 50%, 100%, 60s each). You are not named in it: the operator's\n"
                 "admission webhook records the user the API server authenticated as its author.\n"
                 "--emergency (break glass): every wave bakes at most the policies' emergencyBake (30s by default),\n"
                 "and the release needs at least one approval by someone other than you even where no policy asks\n"
                 "for one; it is marked as an emergency in its status, history, the audit and the metrics.\n"
                 "--config NAME / --secret NAME: the ConfigMap or Secret of that name (one the target's pods\n"
                 "read) gets the keys of the --from-file/--from-literal flags written after it (up to the next\n"
                 "--config or --secret), loses those of --remove-key, keeps the others; the canary reads the new\n"
                 "content first.\n"
                 "A ConfigMap's new keys go into spec.change.configMaps. A Secret's never enter the GuardedRollout:\n"
                 "the command reads the Secret as you, makes its new content an immutable Secret <NAME>-<content\n"
                 "hash> (reused when it exists with that content) and names that one in spec.change.secrets; values\n"
                 "are never printed. It needs get and create on Secrets in the namespace.\n"
                 "After creating it, the command waits up to --wait seconds for the operator to judge its gates and\n"
                 "prints what it waits for (approvals and by whom, blocking gates) or that it is starting.\n"
                 "exit codes: 0 created (--watch: it Succeeded), 1 error (not found, forbidden, already exists;\n"
                 "--watch: RolledBack or Failed), 2 usage error (or --watch --timeout ran out), 3 refused by the\n"
                 "operator's admission webhook")
    p.add_argument("target", metavar="TARGET", help="name of the Deployment to change (in the namespace)")
    p.add_argument("--image", action="append", default=[], metavar="CONTAINER=IMAGE",
                   help="the new image of a container (repeat for several containers)")
    p.add_argument("--env", action="append", default=[], metavar="[CONTAINER:]KEY=VALUE",
                   help="an environment variable to set (repeatable); CONTAINER may be left out when the target "
                        "has one container or --image names one")
    p.add_argument("--config", action=_ConfigObject, dest="config", const="ConfigMap", default=None,
                   metavar="NAME", help="a ConfigMap the target's pods read whose keys change; the --from-file, "
                   "--from-literal and --remove-key flags after it say how (repeatable, one per ConfigMap)")
    p.add_argument("--secret", action=_ConfigObject, dest="config", const="Secret", default=None, metavar="NAME",
                   help="a Secret the target's pods read whose keys change, as --config; its values go into a new "
                        "immutable Secret, never into the GuardedRollout or the output (repeatable)")
    p.add_argument("--from-file", action=_ConfigContent, dest="config", default=None, metavar="[KEY=]PATH",
                   help="set KEY (default: the file's name) of the --config/--secret before it to the file's "
                        "content (repeatable)")
    p.add_argument("--from-literal", action=_ConfigContent, dest="config", default=None, metavar="KEY=VALUE",
                   help="set KEY of the --config/--secret before it to VALUE (repeatable)")
    p.add_argument("--remove-key", action=_ConfigContent, dest="config", default=None, metavar="KEY",
                   help="remove KEY from the --config/--secret before it (repeatable)")
    p.add_argument("--wave", action="append", default=[], metavar="SIZE[:BAKE][:gate]",
                   help="a wave, in order (repeatable): SIZE a pod count (1) or a percent of the pods (50%%), "
                        "BAKE how long it runs healthy before the next (default 60s), gate: wait for a promote")
    p.add_argument("--description", metavar="TEXT", default=None, help="what changes and why (spec.description)")
    p.add_argument("--ticket", metavar="ID", default=None, help="change ticket or issue (spec.ticket)")
    p.add_argument("--rollback-plan", metavar="TEXT", default=None, help="how to undo it (spec.rollbackPlan)")
    p.add_argument("--ai-assisted", action="store_true", help="the change was written with AI assistance")
    p.add_argument("--emergency", action="store_true",
                   help="break glass for a fix that cannot wait: bakes shortened to the emergency minimum; still "
                        "needs an approval by someone other than you")
    p.add_argument("--name", metavar="NAME", default=None,
                   help="name of the GuardedRollout (default: <TARGET>-<hash of its spec>)")
    p.add_argument("--dry-run", nargs="?", const="client", choices=("client", "server"), default=None,
                   metavar="client|server",
                   help="client: print the GuardedRollout and create nothing; server: have the API server admit it "
                        "(the webhook stamps you as author) without storing it")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default=None, metavar="FORMAT",
                   help="with --dry-run: print the object as yaml (default) or json")
    p.add_argument("--wait", type=float, metavar="SECONDS", default=15.0,
                   help="how long to wait for the operator to judge the gates (default: 15; 0: do not wait)")
    p.add_argument("--watch", action="store_true", help="then follow it as `kubectl guarded watch` does")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="with --watch: give up after this many seconds and exit 2 (default: wait as long as it takes)")
    add_connection_flags(p, top=False)

    p = _command(sub, "audit", "report on GuardedRollouts: authors, approvers, gates, policy, blast radius, "
                 "evidence, outcome",
                 "examples:\n  kubectl guarded audit -n shop                       every rollout in shop, as Markdown\n"
                 "  kubectl guarded audit -A --since 24h > audit.md     the last day, every namespace\n"
                 "  kubectl guarded audit -A --since 2026-03-01T00:00:00Z --until 2026-04-01T00:00:00Z -o json\n\n"
                 "A rollout is reported when it was created, or recorded anything in its history, in the range;\n"
                 "its timeline and analysis evidence are limited to the range. Approvers come from the operator's\n"
                 "judgement (status.approvals) and from every RolloutApproval naming the rollout. The report holds\n"
                 "what the cluster still has: deleted rollouts are gone and status keeps the newest entries only.\n"
                 "T is an RFC 3339 time or a duration back from now (30m, 24h, 7d).")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="report on every namespace")
    p.add_argument("--since", metavar="T", default=None,
                   help="only what happened at or after T (default: from the beginning)")
    p.add_argument("--until", metavar="T", default=None, help="only what happened at or before T (default: now)")
    p.add_argument("-o", "--output", choices=AUDIT_OUTPUTS, default="markdown", metavar="FORMAT",
                   help="output format: markdown (default), json or yaml (the same report)")
    add_connection_flags(p, top=False)

    p = _command(sub, "dashboard", "serve a web page on localhost that shows your rollouts live and steers them as you",
                 "examples:\n  kubectl guarded dashboard --prometheus-url http://127.0.0.1:9090\n"
                 "  kubectl guarded dashboard -n shop --port 8765\n\n"
                 "Every read and every button (approve, promote, pause, resume, abort, retry) is made with your\n"
                 "kubeconfig's identity, through the same code as the commands of the same name, so RBAC and the\n"
                 "admission rules apply and refusals read the same. It lists every namespace unless -n is given\n"
                 "(the context's namespace when you may not list them all). It listens on 127.0.0.1 and prints a\n"
                 "URL with a secret token; other users and other sites cannot use it (docs/dashboard.md).")
    p.add_argument("--address", metavar="IP", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1). A wildcard (0.0.0.0, ::) is refused; any "
                        "other non-loopback address needs --insecure-remote")
    p.add_argument("--insecure-remote", action="store_true",
                   help="allow a non-loopback --address: plain HTTP, so the token crosses the network in clear text")
    p.add_argument("--port", type=int, metavar="N", default=0, help="port to listen on (default: a free one)")
    p.add_argument("--prometheus-url", metavar="URL", default=os.environ.get("GUARDED_PROMETHEUS_URL", ""),
                   help="Prometheus for the charts (default: $GUARDED_PROMETHEUS_URL, as the operator's)")
    add_connection_flags(p, top=False)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "wait", 0) < 0 or (getattr(args, "timeout", None) or 0) < 0:
        parser.error("--wait and --timeout must not be negative")
    if args.command == "dashboard" and not 0 <= args.port <= 65535:
        parser.error("dashboard: --port must be from 0 (a free one) to 65535")
    if getattr(args, "revision", None) is not None and args.revision < 1:
        parser.error("--revision must be 1 or more (it is the rollout's metadata.generation)")
    if args.command == "release":
        if args.output and not args.dry_run:
            parser.error("release: -o/--output prints the object of a --dry-run; without one the release is created")
        if args.timeout is not None and not args.watch:
            parser.error("release: --timeout is how long --watch follows the release; give --watch too")
        for group in args.config or []:
            if not group.sources and not group.remove:
                flag = "--config" if group.kind == "ConfigMap" else "--secret"
                parser.error(f"release: {flag} {group.name}: give --from-file, --from-literal or --remove-key after "
                             "it (the keys to set or remove)")
    now = datetime.now(UTC)
    for flag in ("since", "until"):
        if getattr(args, flag, None) is not None:
            try:
                parse_bound(getattr(args, flag), now)
            except ValueError as exc:
                parser.error(f"--{flag}: {exc}")
    return args


def request_action(args: argparse.Namespace) -> str:
    """The action sent for a request command ("promote --full" is promote-full)."""
    return "promote-full" if args.command == "promote" and args.full else args.command
