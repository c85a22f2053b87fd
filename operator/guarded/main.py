"""The operator's entry point: `guarded-operator` (registrations live in guarded.handlers.operator)."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

PEERING_NAME = "guarded-rollouts"  # the ClusterKopfPeering object in manifests/install


def peering_priority(now: float, rng: random.Random) -> int:
    """Older replicas outrank newer ones, so leadership stays put while a replica restarts.

    kopf's peering is not leader election: operators of the *same* priority all pause. So every
    replica takes its own, from its start time in milliseconds (earlier: higher) with a random
    tie-break below it. Negative, so that a developer's operator at kopf's default priority 0
    outranks the deployed ones, as kopf intends."""
    return -(int(now * 1000) * 1000 + rng.randrange(1000))


M_ARENA_MAX = -8  # glibc's mallopt parameter


def few_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (by default 8 per core, one taken per thread that allocates): with kopf's
    event loop, the I/O threads and the webhook server each in an arena of its own, the operator's memory
    grew by some 100 MiB of half-empty arenas at N = 1,000 rollouts (issue 11). Before any thread starts;
    GUARDED_MALLOC_ARENAS=0 leaves glibc's default. False where there is no glibc."""
    if arenas <= 0:
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


TLS_READ_BUFFER = 16 * 1024  # one TLS record at most: what a read can return at once anyway


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> bool:
    """Give each TLS connection of the event loop a read buffer of `size` instead of asyncio's 256 KiB.

    asyncio allocates that buffer per connection, for its whole life: kopf's client connections to the API
    server and the API server's connections to our admission webhooks, some 220 of them at N = 150, held
    55 MiB of the operator's memory, most of its growth with N (tracemalloc, issue 11). A read returns at
    most one TLS record (16 KiB), so a larger buffer buys nothing. False where asyncio has no such buffer."""
    import asyncio.sslproto
    if not isinstance(getattr(asyncio.sslproto.SSLProtocol, "max_size", None), int):
        return False
    asyncio.sslproto.SSLProtocol.max_size = size
    return True


def main(argv: list[str] | None = None) -> int:
    few_malloc_arenas(int(os.environ.get("GUARDED_MALLOC_ARENAS", "2") or "0"))
    small_tls_buffers()
    parser = argparse.ArgumentParser(prog="guarded-operator", description="Run the guarded-rollouts operator.")
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--context", help="kubeconfig context to use outside a cluster")
    parser.add_argument("--peering", action="store_true",
                        help=f"coordinate replicas through kopf peering (one active at a time); needs the "
                        f"ClusterKopfPeering {PEERING_NAME!r} (or a KopfPeering per namespace with -n)")
    parser.add_argument("--peering-lifetime", type=int, default=int(os.environ.get("GUARDED_PEERING_LIFETIME", "60")),
                        help="seconds after its last keep-alive that a replica counts as gone (takeover time "
                        "after a crash)")
    parser.add_argument("--liveness", default=os.environ.get("GUARDED_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="health endpoint URL (empty to disable)")
    parser.add_argument("--metrics-listen", default=os.environ.get("GUARDED_METRICS_LISTEN", ""),
                        help="host:port serving /metrics and /readyz; empty: off")
    parser.add_argument("--prometheus-url", default=os.environ.get("GUARDED_PROMETHEUS_URL", ""),
                        help="Prometheus for metric analysis and alerts")
    parser.add_argument("--alerts-listen", default=os.environ.get("GUARDED_ALERTS_LISTEN", ""),
                        help="host:port for the Alertmanager webhook (POST /alertmanager); empty: off")
    parser.add_argument("--webhook-listen", default=os.environ.get("GUARDED_WEBHOOK_LISTEN", ""),
                        help="host:port for the admission webhooks (HTTPS) that stamp authors and approvers; "
                        "empty: off (policies that require approvals then hold every rollout: authors unknown)")
    parser.add_argument("--webhook-host", default=os.environ.get("GUARDED_WEBHOOK_HOST", ""),
                        help="the name the API server reaches the webhooks by (default: the listen host), "
                        "e.g. guarded-rollouts-webhook.guarded-rollouts.svc")
    parser.add_argument("--webhook-tls-dir", default=os.environ.get("GUARDED_WEBHOOK_TLS_DIR", ""),
                        help="directory with tls.crt, tls.key and ca.crt; without them a private CA is made")
    parser.add_argument("--notify-events", default=os.environ.get("GUARDED_NOTIFY_EVENTS", ""),
                        help="comma-separated events the operator-wide sinks are sent (default: all); their URLs "
                        "come from GUARDED_NOTIFY_SLACK_URL / GUARDED_NOTIFY_WEBHOOK_URL only (credentials: never "
                        "on the command line). See docs/notifications.md")
    parser.add_argument("--notify-namespace", default=os.environ.get("GUARDED_NOTIFY_NAMESPACE", ""),
                        help="namespace of the Secrets RolloutPolicies' notification sinks name (default: the "
                        "operator's own)")
    parser.add_argument("--log-level", default=os.environ.get("GUARDED_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    from guarded import logs
    logs.configure(args.log_level)
    if args.context:
        os.environ["GUARDED_KUBE_CONTEXT"] = args.context
    os.environ["GUARDED_PROMETHEUS_URL"] = args.prometheus_url
    os.environ["GUARDED_ALERTS_LISTEN"] = args.alerts_listen
    os.environ["GUARDED_WEBHOOK_LISTEN"] = args.webhook_listen
    os.environ["GUARDED_WEBHOOK_HOST"] = args.webhook_host
    os.environ["GUARDED_WEBHOOK_TLS_DIR"] = args.webhook_tls_dir
    os.environ["GUARDED_METRICS_LISTEN"] = args.metrics_listen
    os.environ["GUARDED_NOTIFY_EVENTS"] = args.notify_events
    os.environ["GUARDED_NOTIFY_NAMESPACE"] = args.notify_namespace

    import kopf

    import guarded.handlers.operator  # registers the handlers
    import guarded.handlers.workloads
    if args.webhook_listen:
        import guarded.handlers.admission
        import guarded.handlers.workload_admission  # noqa: F401  (guarded Deployments: a change becomes a release)
    from guarded.handlers import endpoints

    settings = kopf.OperatorSettings()
    settings.peering.lifetime = args.peering_lifetime
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        settings=settings,
        standalone=not args.peering,
        # Mandatory when asked for: without its peering object a replica waits rather than act alone.
        peering_name=PEERING_NAME if args.peering else None,
        priority=peering_priority(time.time(), random.Random()) if args.peering else None,
        liveness_endpoint=args.liveness or None,
        ready_flag=endpoints.STARTED,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
