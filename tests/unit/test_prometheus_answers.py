"""What the Prometheus provider makes of answers that are not Prometheus' own (a proxy's page, a cut answer):
an error that says so, never an exception and never a value."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from guarded.metrics.prometheus import PrometheusProvider


def serve(status: int, body: bytes) -> tuple[http.server.HTTPServer, str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def answering() -> Iterator[list[http.server.HTTPServer]]:
    servers: list[http.server.HTTPServer] = []
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize(("status", "body", "said"), [
    (200, b"<html>sign in</html>", "not Prometheus' JSON"),
    (200, b'{"status": "success", "data": {"resultType": "vec', "not Prometheus' JSON"),
    (400, b'{"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}', "bad query"),
    (422, b'{"status": "error", "errorType": "execution", "error": "too many samples"}', "HTTP 422 execution"),
    (200, b'{"status": "success", "data": {"resultType": "string", "result": [1764000000, "ok"]}}', "a string"),
])
def test_an_answer_that_is_not_data_is_an_error_that_says_so(answering, status: int, body: bytes, said: str) -> None:
    server, url = serve(status, body)
    answering.append(server)
    provider = PrometheusProvider(url, timeout=2, retries=0)
    series = provider.instant("sum(x)")
    assert series.values == {} and series.error is not None and said in series.error, series.error
    labels = provider.labels("ALERTS")
    assert labels.items == () and labels.error is not None and said in labels.error
