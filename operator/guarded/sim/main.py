"""The simulator's command line and poll loop.

    python -m guarded.sim.main --kubeconfig PATH [--context NAME] --port 19100 --listen 127.0.0.1 \\
        --seed 1 --tick 0.5 --default-rps 100

Ticks follow a fixed schedule (start + k * tick), so the time spent listing pods does not stretch
the period and lower every rate. Each step simulates a whole number of ticks: one normally, more
if a slow or failed poll made the loop miss slots (capped, so that an outage is not followed by a
burst). That keeps the simulation's input a function of the observations alone, hence the seed
reproduces it.

Logs go to stderr as JSON (structlog), one line per pod that starts or stops serving, per bad
annotation value or unusable config key (a Secret's name and key, never its values), and per change
between failing and succeeding polls: never one per tick.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import structlog

from guarded.sim.exporter import Store, serve
from guarded.sim.kube import ClusterReader
from guarded.sim.model import DEFAULT_RPS, NOT_FOUND, InvalidAnnotation, InvalidConfig, Simulation, StepResult

MAX_TICKS_PER_STEP = 10


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m guarded.sim.main", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kube context (default: the kubeconfig's current one)")
    p.add_argument("--port", type=int, default=19100, help="port for /metrics and /healthz")
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--tick", type=float, default=0.5, help="seconds between polls and counter updates")
    p.add_argument("--default-rps", type=float, default=DEFAULT_RPS,
                   help="a service's requests per second when its pods do not say")
    p.add_argument("--label-selector", default="app", help="which pods to list (the rest is filtered client-side)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if not args.tick > 0:
        p.error("--tick must be positive")
    return args


def configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    logging.getLogger("kubernetes").setLevel("WARNING")
    logging.getLogger("urllib3").setLevel("WARNING")
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class Loop:
    """Poll, step, publish, on schedule, until `stop` is set."""

    def __init__(self, reader: ClusterReader, sim: Simulation, store: Store, tick: float,
                 stop: threading.Event) -> None:
        self.reader, self.sim, self.store, self.tick, self.stop = reader, sim, store, tick, stop
        self.log = structlog.get_logger("guarded.sim")
        self._reported: set[InvalidAnnotation | InvalidConfig] = set()
        self._failing = False

    def run(self) -> None:
        start = time.monotonic()
        last_slot: int | None = None
        while not self.stop.is_set():
            try:
                observation = self.reader.observe()
            except Exception as exc:  # the API server may restart; keep the last counters and retry
                if not self._failing:
                    self.log.warning("listing pods (or their configuration) failed; retrying every tick",
                                     error=str(exc))
                self._failing = True
            else:
                if self._failing:
                    self.log.info("listing pods works again")
                self._failing = False
                # Simulate the slots of the schedule since the last step: each slot once, and at least one.
                slot = math.floor((time.monotonic() - start) / self.tick)
                ticks = 1 if last_slot is None else min(max(slot - last_slot, 1), MAX_TICKS_PER_STEP)
                last_slot = slot if last_slot is None else max(slot, last_slot + 1)
                self.report(self.sim.step(observation, ticks * self.tick))
                self.store.publish(self.sim.snapshot())
            next_at = start + (math.floor((time.monotonic() - start) / self.tick) + 1) * self.tick
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def report(self, result: StepResult) -> None:
        for pod in result.started:
            self.log.info("pod serving", namespace=pod.namespace, pod=pod.name, app=pod.app)
        for pod in result.stopped:
            self.log.info("pod no longer serving", namespace=pod.namespace, pod=pod.name, app=pod.app)
        for bad in result.invalid:
            if bad not in self._reported:
                self._reported.add(bad)
                self.log.warning("annotation is not a number; using the default", namespace=bad.namespace,
                                 pod=bad.name or None, annotation=bad.key, value=bad.value)
        for config in result.invalid_config:
            if config not in self._reported:
                self._reported.add(config)
                self.report_config(config)

    def report_config(self, bad: InvalidConfig) -> None:
        """One line per unusable config key or entry; `value` is only ever a ConfigMap's (see InvalidConfig)."""
        where = {"namespace": bad.namespace, "pod": bad.name, "config_key": bad.key}
        if bad.problem == NOT_FOUND:
            self.log.warning(f"{bad.problem}; using the annotations", **where, searched=list(bad.searched))
        else:
            self.log.warning(f"{bad.problem}; using the annotations", **where, source=bad.source,
                             entry=bad.entry or None, value=bad.value or None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    log = structlog.get_logger("guarded.sim")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    reader = ClusterReader(args.kubeconfig, args.context, args.label_selector)
    store = Store()
    server = serve(store, args.listen, args.port, health_max_age=max(10.0, 10 * args.tick))
    log.info("simulator started", listen=f"{args.listen}:{args.port}", seed=args.seed, tick=args.tick,
             default_rps=args.default_rps)
    try:
        Loop(reader, Simulation(args.seed, args.default_rps), store, args.tick, stop).run()
    finally:
        reader.close()
        server.shutdown()
        server.server_close()
        log.info("simulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
