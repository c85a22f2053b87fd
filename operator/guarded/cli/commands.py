"""One function per command: read through `Kube`, format with the pure modules, return the exit code."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from guarded.cli.audit import Range, build_report, render_markdown
from guarded.cli.errors import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CliError
from guarded.cli.flow import (
    approval_body,
    await_answer,
    await_gates,
    await_judgement,
    new_request_id,
    request_patch,
    watch,
)
from guarded.cli.gateview import approval_preview, approval_tally, generation
from guarded.cli.kube import Kube
from guarded.cli.parser import REQUESTS, request_action
from guarded.cli.release import (
    Defaults,
    ReleaseError,
    change_of,
    containers_of,
    created_lines,
    parse_envs,
    parse_images,
    parse_wave,
    release_defaults,
    release_manifest,
    waiting_lines,
)
from guarded.cli.release_config import SecretVersion, config_change, config_facts, make_versions
from guarded.cli.tables import as_list, dump, history_table, list_table, parse_bound, without_managed_fields
from guarded.cli.view import status_view


class Io:
    """Where a command writes: results to `out`, diagnostics to `err`, both flushed line by line."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def cmd_list(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    namespace = None if args.all_namespaces else kube.namespace(args.namespace)
    items = kube.list(namespace)
    if args.output != "table":
        io.print(dump(as_list(items), args.output))
    elif not items:
        io.error("No resources found" + (f" in {namespace} namespace." if namespace else "."))
    else:
        io.print(list_table(items, datetime.now(UTC), all_namespaces=namespace is None))
    return EXIT_OK


def cmd_status(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    obj = kube.get(kube.namespace(args.namespace), args.name)
    io.print(status_view(obj) if args.output == "table" else dump(without_managed_fields(obj), args.output))
    return EXIT_OK


def cmd_history(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    namespace = kube.namespace(args.namespace)
    status = kube.get(namespace, args.name).get("status") or {}
    if args.output != "table":
        io.print(dump(status.get("history") or [], args.output))
    elif not status.get("history"):
        io.error(f'No history recorded yet for guardedrollout "{args.name}" in namespace "{namespace}".')
    else:
        io.print(history_table(status))
    return EXIT_OK


def cmd_watch(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    return follow(kube, kube.namespace(args.namespace), args.name, args.timeout, io)


def follow(kube: Kube, namespace: str, name: str, timeout: float | None, io: Io) -> int:
    """`watch`: render the rollout until it ends (0 Succeeded, 1 otherwise, 2 timed out)."""
    tty = io.out.isatty()
    result = watch(lambda: kube.get(namespace, name), io.print, tty=tty, timeout=timeout)
    if result.timed_out:
        io.error(f'Error: timed out after {timeout:g}s waiting for guardedrollout "{name}" to finish '
                 f"(phase {result.phase})")
    elif tty:
        io.print(f'guardedrollout "{name}": {result.phase}')
    return result.code


def build_release(kube: Kube, args: argparse.Namespace,
                  namespace: str) -> tuple[dict, str, int | None, list[SecretVersion]]:
    """The GuardedRollout the flags ask for, where its waves came from, the target's replica count, and the
    Secret versions it reads (made before it is created)."""
    deployment = kube.get_deployment(namespace, args.target)
    containers = containers_of(deployment)
    try:
        images = parse_images(args.image)
        only = next(iter(images)) if len(images) == 1 else containers[0] if len(containers) == 1 else None
        envs = parse_envs(args.env, only)
        config, versions = config_change(kube, namespace, args.config or [])
        change = {**(change_of(images, envs, containers) if images or envs or not config else {}), **config}
        waves = [parse_wave(w) for w in args.wave]
    except ReleaseError as exc:
        raise CliError(f"Error: {exc}", EXIT_USAGE) from None
    if waves:
        defaults = Defaults(source="--wave")
    else:
        policies, why = kube.policies_if_readable()
        labels = kube.namespace_labels_if_readable(namespace) if policies else {}
        defaults = release_defaults(policies, labels, (deployment.get("metadata") or {}).get("labels") or {}, why)
    try:
        manifest = release_manifest(
            namespace=namespace, target=args.target, change=change, waves=waves or None, defaults=defaults,
            description=args.description, ticket=args.ticket, rollback_plan=args.rollback_plan,
            ai_assisted=args.ai_assisted, emergency=args.emergency, name=args.name)
    except ReleaseError as exc:
        raise CliError(f"Error: {exc}", EXIT_USAGE) from None
    replicas = (deployment.get("spec") or {}).get("replicas")
    return manifest, defaults.source, replicas, versions


def cmd_release(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    namespace = kube.namespace(args.namespace)
    manifest, source, replicas, versions = build_release(kube, args, namespace)
    # The Secret versions it reads first (names and keys only, never values; on stderr when stdout is an object).
    for line in make_versions(kube, namespace, versions, args.dry_run):
        (io.error if args.dry_run == "client" or args.output else io.print)(line)
    config = config_facts(manifest["spec"]["change"], versions)
    if args.dry_run == "client":
        io.print(dump(manifest, args.output or "yaml"))
        return EXIT_OK
    name = manifest["metadata"]["name"]
    try:
        created = kube.create_rollout(namespace, manifest, dry_run=args.dry_run == "server")
    except CliError as exc:
        if exc.code == EXIT_ERROR and "already exists" in exc.message:
            raise CliError(f"{exc.message}\nThe same release was asked for before: kubectl guarded status {name} -n "
                           f"{namespace} (to run it again after a rollback: kubectl guarded retry {name})") from None
        raise
    if args.dry_run == "server":
        if args.output:
            io.print(dump(without_managed_fields(created), args.output))
        else:
            for line in created_lines(created, waves_source=source, replicas=replicas, dry_run="server",
                                      config=config):
                io.print(line)
        return EXIT_OK
    for line in created_lines(created, waves_source=source, replicas=replicas, config=config):
        io.print(line)
    obj = await_gates(lambda: kube.get(namespace, name), args.wait) if args.wait > 0 else created
    for line in waiting_lines(obj, waited=args.wait):
        io.print(line)
    if args.watch:
        return follow(kube, namespace, name, args.timeout, io)
    return EXIT_OK


def cmd_request(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    namespace = kube.namespace(args.namespace)
    request_id = new_request_id()
    kube.merge_patch(namespace, args.name, request_patch(request_id, request_action(args)))
    answer = await_answer(request_id, lambda: kube.get(namespace, args.name).get("status"), args.wait)
    (io.error if answer.code not in (EXIT_OK, EXIT_REJECTED) else io.print)(answer.text)
    return answer.code


def cmd_approve(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    namespace = kube.namespace(args.namespace)
    obj = kube.get(namespace, args.name)
    current = generation(obj)
    revision = current if args.revision is None else args.revision
    io.print(approval_preview(obj, revision))
    if revision != current:
        io.error(f"Warning: the rollout is at revision {current}, not {revision}; the operator approves only the "
                 "current revision")
    created = kube.create_approval(namespace, approval_body(args.name, revision, args.comment))
    name, spec = created["metadata"]["name"], created.get("spec") or {}
    io.print(f"rolloutapproval/{name} created: approved revision {spec.get('revision', revision)} of {args.name} "
             f"as {spec.get('approver') or '<unknown>'}")
    status, seen = await_judgement(name, lambda: kube.get(namespace, args.name).get("status"), args.wait)
    for line in approval_tally(status, name, seen):
        io.print(line)
    return EXIT_OK


def cmd_audit(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    now = datetime.now(UTC)
    namespace = None if args.all_namespaces else kube.namespace(args.namespace)
    rng = Range(since=None if args.since is None else parse_bound(args.since, now),
                until=None if args.until is None else parse_bound(args.until, now))
    report = build_report(kube.list(namespace), kube.list_approvals(namespace), rng=rng, now=now,
                          scope="all namespaces" if namespace is None else f"namespace {namespace}")
    io.print(render_markdown(report) if args.output == "markdown" else dump(report, args.output))
    return EXIT_OK


def cmd_dashboard(kube: Kube, args: argparse.Namespace, io: Io) -> int:
    # Imported here: aiohttp and plotly load only for the dashboard.
    from guarded.dashboard.server import PROMETHEUS_QUERY_SECONDS, Dashboard, check_address, serve
    from guarded.metrics.prometheus import PrometheusProvider
    warning = check_address(args.address, insecure_remote=args.insecure_remote)
    if warning:
        io.error(warning)
    provider = (PrometheusProvider(args.prometheus_url, timeout=PROMETHEUS_QUERY_SECONDS, retries=0)
                if args.prometheus_url else None)
    if provider is None:
        io.error("Note: no --prometheus-url (or $GUARDED_PROMETHEUS_URL): the rollouts' charts stay empty")
    serve(Dashboard(kube=kube, namespace=args.namespace, provider=provider), address=args.address, port=args.port,
          out=io.out)
    return EXIT_OK


COMMANDS: dict[str, Callable[[Kube, argparse.Namespace, Io], int]] = {
    "list": cmd_list, "status": cmd_status, "history": cmd_history, "watch": cmd_watch,
    **dict.fromkeys(REQUESTS, cmd_request),
    "approve": cmd_approve, "audit": cmd_audit, "release": cmd_release, "dashboard": cmd_dashboard,
}


def run(kube: Kube, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return COMMANDS[args.command](kube, args, Io(out, err))

