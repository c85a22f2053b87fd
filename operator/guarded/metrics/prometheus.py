"""Prometheus, through prometheus-api-client, with timeouts, retries and errors returned as data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from guarded.metrics.provider import Grouped, Labels, Series

POOL = 32   # connections kept to Prometheus (the operator's I/O threads: kube/client._POOL)

# Told of every query sent, by kind (range, instant, labels): the operator counts them (handlers/telemetry).
QueryObserver = Callable[[str], None]


class PrometheusProvider:
    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 2,
                 observer: QueryObserver | None = None) -> None:
        self.url = url
        self.observer = observer
        retry = Retry(total=retries, backoff_factor=0.2, status_forcelist=(502, 503, 504),
                      allowed_methods=frozenset({"GET", "POST"}))
        # POST: a shared query names every namespace under analysis (metrics/shared), too long for a URL at
        # scale. A pool as large as the operator's I/O threads: a smaller one drops connections under load.
        self.client = PrometheusConnect(url=url, disable_ssl=True, retry=retry, timeout=int(max(1, timeout)),
                                        method="POST")
        self.client._session.mount(url, HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=POOL))

    def _count(self, kind: str) -> None:
        if self.observer is not None:
            self.observer(kind)

    def _describe(self, exc: Exception, query: str) -> str:
        text = str(exc)
        if isinstance(exc, PrometheusApiClientException) and ("bad_data" in text or "parse error" in text):
            return f"bad query {query!r}: {text[:300]}"
        if isinstance(exc, requests.RequestException):
            return f"Prometheus at {self.url} unreachable: {type(exc).__name__}"
        return f"query failed: {text[:300]}"

    def _matrix(self, query: str, start: datetime, end: datetime, step_seconds: float) -> tuple[list, str | None]:
        """A range query's series, or the error that says why there are none (errors are data)."""
        self._count("range")
        try:
            return self.client.custom_query_range(query, start_time=start, end_time=end,
                                                  step=f"{step_seconds:g}s"), None
        except Exception as exc:
            return [], self._describe(exc, query)

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
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        self._count("instant")
        try:
            result = self.client.custom_query(query, params=params)
        except Exception as exc:
            return Grouped(error=self._describe(exc, query))
        return _grouped(query, label, result, lambda item: [item["value"]] if "value" in item else [])

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        self._count("instant")
        try:
            result = self.client.custom_query(query, params=params)
        except Exception as exc:
            return Series(error=self._describe(exc, query))
        if len(result) > 1:
            return Series(error=f"query {query!r} returned {len(result)} series; aggregate it to one (sum)")
        if not result:
            return Series()
        t, v = result[0]["value"]
        return Series(values={float(t): float(v)})

    def labels(self, query: str) -> Labels:
        self._count("labels")
        try:
            result = self.client.custom_query(query)
        except Exception as exc:
            return Labels(error=self._describe(exc, query))
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
