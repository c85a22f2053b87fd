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

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
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
        self._rendered: tuple[Snapshot, bytes] | None = None
        self._last_poll: float | None = None

    def publish(self, snapshot: Snapshot, at: float | None = None) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._last_poll = time.monotonic() if at is None else at

    def current(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def exposition(self) -> bytes:
        """The current snapshot as text, rendered once per snapshot whatever the number of scrapes."""
        with self._lock:
            snap, cached = self._snapshot, self._rendered
        if cached is not None and cached[0] is snap:
            return cached[1]
        text = render(snap)
        with self._lock:
            self._rendered = (snap, text)
        return text

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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(snap: Snapshot) -> bytes:
    """The text exposition of one snapshot, byte for byte what ``generate_latest`` makes of SimCollector's
    families (tests/unit/test_sim.py compares them), written directly: at 3,000 pods, a scrape a second
    through prometheus_client's generic families took most of a core (bench/scale, N = 1,000)."""
    requests, orders, buckets, ready = [], [], [], []
    for s in snap.pods:  # labels in name order, as prometheus_client writes them
        app, where = f'app="{_label(s.app)}"', f'namespace="{_label(s.namespace)}",pod="{_label(s.pod)}"'
        requests.append(f'http_requests_total{{{app},code="200",{where}}} {floatToGoString(s.ok)}\n'
                        f'http_requests_total{{{app},code="500",{where}}} {floatToGoString(s.errors)}\n')
        orders.append(f"orders_total{{{app},{where}}} {floatToGoString(s.orders)}\n")
        buckets.extend(f'http_request_duration_seconds_bucket{{{app},le="{le}",{where}}} {floatToGoString(n)}\n'
                       for le, n in zip(BUCKET_LABELS, s.buckets, strict=True))
        buckets.append(f"http_request_duration_seconds_count{{{app},{where}}} {floatToGoString(s.buckets[-1])}\n"
                       f"http_request_duration_seconds_sum{{{app},{where}}} {floatToGoString(s.duration_sum)}\n")
    for (namespace, app_name), count in snap.ready:
        ready.append(f'sim_ready_pods{{app="{_label(app_name)}",namespace="{_label(namespace)}"}} '
                     f"{floatToGoString(count)}\n")
    return "".join([
        "# HELP http_requests_total Requests served, by status code.\n# TYPE http_requests_total counter\n",
        *requests,
        "# HELP orders_total Orders placed (a share of successful requests).\n# TYPE orders_total counter\n",
        *orders,
        "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n",
        *buckets,
        "# HELP sim_ready_pods Ready pods that share a service's traffic.\n# TYPE sim_ready_pods gauge\n",
        *ready,
    ]).encode()


def make_registry(store: Store) -> CollectorRegistry:
    """A registry of its own: no process or Python metrics, only the simulated service's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimCollector(store))
    return registry


def serve(store: Store, host: str, port: int, health_max_age: float) -> http.server.ThreadingHTTPServer:
    """Start serving /metrics and /healthz on a daemon thread; /healthz is 503 until a recent poll succeeded."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, store.exposition(), CONTENT_TYPE_LATEST)
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
