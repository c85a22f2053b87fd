"""Alertmanager webhook receiver: a firing alert rolls back matching rollouts without waiting for
the next analysis interval. Alerts live in memory only; the ALERTS series in Prometheus, checked at
every analysis step, is the durable path when the operator restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from guarded import logs

FIRING_TTL_SECONDS = 600.0  # Alertmanager repeats firing alerts well within this


@dataclass
class AlertStore:
    _firing: dict[str, tuple[dict[str, str], float]] = field(default_factory=dict)

    def update(self, payload: dict[str, Any], now: float) -> int:
        count = 0
        for alert in payload.get("alerts", []):
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            key = alert.get("fingerprint") or repr(sorted(labels.items()))
            if alert.get("status", payload.get("status")) == "firing":
                self._firing[key] = (labels, now + FIRING_TTL_SECONDS)
                count += 1
            else:
                self._firing.pop(key, None)
        return count

    def matching(self, match_labels: dict[str, str], now: float) -> tuple[str, ...]:
        names = set()
        for key, (labels, expires) in list(self._firing.items()):
            if expires < now:
                del self._firing[key]
                continue
            if all(labels.get(k) == v for k, v in match_labels.items()):
                names.add(labels.get("alertname", "?"))
        return tuple(sorted(names))


STORE = AlertStore()


def app(on_alert: Callable[[], None]) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be Alertmanager webhook JSON"}, status=400)
        firing = STORE.update(payload, time.time())
        logs.logger(rollout=None, namespace=None, wave=None).info("alertmanager webhook", firing=firing)
        if firing:
            on_alert()
        return web.json_response({"firing": firing})

    application = web.Application()
    application.router.add_post("/alertmanager", receive)
    return application
