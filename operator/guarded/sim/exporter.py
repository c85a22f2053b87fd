"""Prometheus exposition of the simulator's counters, and the /metrics and /healthz HTTP server.

A custom collector over the latest snapshot rather than prometheus_client's Counter objects: the
simulation owns the numbers, and series of pods that are gone must disappear, which is one line
here (they are absent from the next snapshot) but bookkeeping with labelled Counter children.
The poll loop publishes a new immutable snapshot each tick; scrapes, on the HTTP server's threads,
read whichever is current under a lock, so a scrape never sees half a tick.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from guarded.sim.model import BUCKETS, Snapshot

POD_LABELS = ["namespace", "pod", "app"]
BUCKET_LABELS = [*(floatToGoString(b) for b in BUCKETS), "+Inf"]


class Store:
    """The latest snapshot and when the cluster was last read, shared by the poll loop and scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._last_poll: float | None = None

    def publish(self, snapshot: Snapshot, at: float | None = None) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._last_poll = time.monotonic() if at is None else at

    def current(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def fresh(self, max_age: float, now: float | None = None) -> bool:
        """Whether a poll succeeded within `max_age` seconds (never true before the first one)."""
        with self._lock:
            last = self._last_poll
        return last is not None and (time.monotonic() if now is None else now) - last <= max_age


class SimCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        snap = self.store.current()
        requests = CounterMetricFamily("http_requests", "Requests served, by status code.",
                                       labels=[*POD_LABELS, "code"])
        orders = CounterMetricFamily("orders", "Orders placed (a share of successful requests).", labels=POD_LABELS)
        duration = HistogramMetricFamily("http_request_duration_seconds", "Request latency.", labels=POD_LABELS)
        for s in snap.pods:
            labels = [s.namespace, s.pod, s.app]
            requests.add_metric([*labels, "200"], s.ok)
            requests.add_metric([*labels, "500"], s.errors)
            orders.add_metric(labels, s.orders)
            buckets = list(zip(BUCKET_LABELS, s.buckets, strict=True))
            duration.add_metric(labels, buckets=buckets, sum_value=s.duration_sum)
        ready = GaugeMetricFamily("sim_ready_pods", "Ready pods that share a service's traffic.",
                                  labels=["namespace", "app"])
        for (namespace, app), count in snap.ready:
            ready.add_metric([namespace, app], count)
        yield requests
        yield orders
        yield duration
        yield ready


def make_registry(store: Store) -> CollectorRegistry:
    """A registry of its own: no process or Python metrics, only the simulated service's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimCollector(store))
    return registry


def serve(store: Store, host: str, port: int, health_max_age: float) -> http.server.ThreadingHTTPServer:
    """Start serving /metrics and /healthz on a daemon thread; /healthz is 503 until a recent poll succeeded."""
    registry = make_registry(store)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = store.fresh(health_max_age)
                self._reply(200 if ok else 503, b"ok\n" if ok else b"no recent successful poll\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes every second: not worth a line
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sim-http", daemon=True).start()
    return server
