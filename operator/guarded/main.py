"""The operator's entry point: `guarded-operator` (registrations live in guarded.handlers.operator)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guarded-operator", description="Run the guarded-rollouts operator.")
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--context", help="kubeconfig context to use outside a cluster")
    parser.add_argument("--peering", action="store_true",
                        help="coordinate replicas through kopf peering (one active at a time)")
    parser.add_argument("--liveness", default=os.environ.get("GUARDED_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="health endpoint URL (empty to disable)")
    parser.add_argument("--prometheus-url", default=os.environ.get("GUARDED_PROMETHEUS_URL", ""),
                        help="Prometheus for metric analysis and alerts")
    parser.add_argument("--alerts-listen", default=os.environ.get("GUARDED_ALERTS_LISTEN", ""),
                        help="host:port for the Alertmanager webhook (POST /alertmanager); empty: off")
    parser.add_argument("--log-level", default=os.environ.get("GUARDED_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    from guarded import logs
    logs.configure(args.log_level)
    if args.context:
        os.environ["GUARDED_KUBE_CONTEXT"] = args.context
    os.environ["GUARDED_PROMETHEUS_URL"] = args.prometheus_url
    os.environ["GUARDED_ALERTS_LISTEN"] = args.alerts_listen

    import kopf

    import guarded.handlers.operator  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=not args.peering,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
