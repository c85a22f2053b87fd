"""Prometheus' HTTP API, with timeouts, retries and errors returned as data.

Our own few lines over requests rather than a client library: the shared queries' answers (metrics/shared)
name every namespace under analysis, and decoding them was the largest part of the operator's CPU at scale
(docs/scale.md), so they are decoded with orjson; and the query goes in a POST's body, never in its URL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from guarded.metrics.provider import Grouped, Labels, Series

POOL = 32   # connections kept to Prometheus (the operator's I/O threads: kube/client._POOL)

# Told of every query sent, by kind (range, instant, labels): the operator counts them (handlers/telemetry).
QueryObserver = Callable[[str], None]


class PrometheusProvider:
    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 2,
                 observer: QueryObserver | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = max(0.1, timeout)
        self.observer = observer
        retry = Retry(total=retries, backoff_factor=0.2, status_forcelist=(502, 503, 504),
                      allowed_methods=frozenset({"GET", "POST"}))
        # A pool as large as the operator's I/O threads: a smaller one drops connections under load.
        self.session = requests.Session()
        self.session.verify = False   # as before: a Prometheus behind a self-signed certificate is still read
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=POOL)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _count(self, kind: str) -> None:
        if self.observer is not None:
            self.observer(kind)

    def _query(self, path: str, query: str, **params: str) -> tuple[list, str | None]:
        """The answer's `data.result` as a list of series ({"metric", "value(s)"}; a scalar answer is one series
        without labels), or the error that says why there is none (errors are data)."""
        try:
            resp = self.session.post(f"{self.url}/api/v1/{path}", data={"query": query, **params},
                                     timeout=self.timeout)
        except requests.RequestException as exc:
            return [], f"Prometheus at {self.url} unreachable: {type(exc).__name__}"
        try:
            body: Any = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return [], f"query failed: HTTP {resp.status_code}, not Prometheus' JSON: {resp.text[:200]!r}"
        if resp.status_code != 200 or body.get("status") != "success":
            kind, text = body.get("errorType", ""), str(body.get("error", ""))[:300]
            if kind == "bad_data":
                return [], f"bad query {query!r}: {text}"
            return [], f"query failed: HTTP {resp.status_code} {kind}: {text}"
        data = body.get("data") or {}
        result = data.get("result")
        if data.get("resultType") == "scalar" and isinstance(result, list):
            return [{"metric": {}, "value": result}], None
        if data.get("resultType") == "string":
            return [], f"query {query!r} answers a string, not a number"
        return (result if isinstance(result, list) else []), None

    def _matrix(self, query: str, start: datetime, end: datetime, step_seconds: float) -> tuple[list, str | None]:
        self._count("range")
        return self._query("query_range", query, start=f"{start.timestamp():.3f}", end=f"{end.timestamp():.3f}",
                           step=f"{step_seconds:g}")

    def _vector(self, query: str, at: datetime | None) -> tuple[list, str | None]:
        self._count("instant")
        return self._query("query", query, **({"time": f"{at.timestamp():.3f}"} if at is not None else {}))

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        if end <= start:
            return Series()
        result, error = self._matrix(query, start, end, step_seconds)
        if error is not None:
            return Series(error=error)
        if len(result) > 1:
            return Series(error=f"query {query!r} returned {len(result)} series; aggregate it to one (sum)")
        if not result:
            return Series()
        return Series(values={float(t): float(v) for t, v in result[0].get("values", [])})

    def range_by(self, query: str, label: str | tuple[str, ...], *, start: datetime, end: datetime,
                 step_seconds: float) -> Grouped:
        if end <= start:
            return Grouped()
        result, error = self._matrix(query, start, end, step_seconds)
        if error is not None:
            return Grouped(error=error)
        return _grouped(query, label, result, lambda item: item.get("values", []))

    def instant_by(self, query: str, label: str | tuple[str, ...], *, at: datetime | None = None) -> Grouped:
        result, error = self._vector(query, at)
        if error is not None:
            return Grouped(error=error)
        return _grouped(query, label, result, lambda item: [item["value"]] if "value" in item else [])

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        result, error = self._vector(query, at)
        if error is not None:
            return Series(error=error)
        if len(result) > 1:
            return Series(error=f"query {query!r} returned {len(result)} series; aggregate it to one (sum)")
        if not result:
            return Series()
        t, v = result[0]["value"]
        return Series(values={float(t): float(v)})

    def labels(self, query: str) -> Labels:
        self._count("labels")
        result, error = self._query("query", query)
        if error is not None:
            return Labels(error=error)
        return Labels(items=tuple(dict(r.get("metric", {})) for r in result))


def _grouped(query: str, label: str | tuple[str, ...], result: list,
             points: Callable[[dict], list]) -> Grouped:
    """A query's series keyed by the values of `label` (several joined with NUL), each by Unix timestamp."""
    labels = (label,) if isinstance(label, str) else label
    out: dict[str, dict[float, float]] = {}
    for item in result:
        found = [(item.get("metric") or {}).get(name) for name in labels]
        key = None if None in found else "\x00".join(str(v) for v in found)
        if key is None or key in out:
            return Grouped(error=f"query {query!r} must return one series per {', '.join(labels)}")
        out[key] = {float(t): float(v) for t, v in points(item)}
    return Grouped(series=out)
