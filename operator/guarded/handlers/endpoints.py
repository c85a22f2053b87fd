"""The operator's own HTTP endpoints on --metrics-listen: /metrics and /readyz.

Liveness stays kopf's (--liveness, /healthz): it answers while kopf's loop runs, which is what a
restart should hinge on. Readiness is stricter and separate: the startup handlers have finished
(kopf raises STARTED after them) and the operator has reached the API server once with its own
credentials. Both replicas of a peered Deployment are ready, the standby included: readiness says
"can serve and take over", not "is the leader".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import kubernetes
from aiohttp import web
from prometheus_client import exposition

from guarded.handlers.telemetry import TELEMETRY, Telemetry

# Raised by kopf once every startup handler has finished (main.py passes it as kopf's ready_flag).
STARTED = threading.Event()
API_CHECK_TIMEOUT = (2.0, 5.0)  # connect, read (seconds)


def listen_address(text: str) -> tuple[str, int]:
    """host:port (host may be empty: all interfaces)."""
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port)


class Readiness:
    def __init__(self, started: threading.Event, reach_api: Callable[[], Awaitable[object]]) -> None:
        self.started = started
        self.reach_api = reach_api
        self.connected = False
        self.last_error = ""

    async def check(self) -> tuple[bool, str]:
        if not self.started.is_set():
            return False, "startup handlers have not finished"
        if not self.connected:
            try:
                await self.reach_api()
            except Exception as exc:  # any failure to reach it means not ready yet
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                return False, f"Kubernetes API not reached yet: {self.last_error}"
            self.connected = True
        return True, "ready"


def api_reacher(api_client: kubernetes.client.ApiClient) -> Callable[[], Awaitable[object]]:
    """GET /version with the operator's credentials: proves the address, the CA and the token."""
    version = kubernetes.client.VersionApi(api_client)
    return lambda: asyncio.to_thread(version.get_code, _request_timeout=API_CHECK_TIMEOUT)


def app(readiness: Readiness, telemetry: Telemetry = TELEMETRY) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(telemetry.registry), headers={"Content-Type": content_type})

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = await readiness.check()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/readyz", readyz)
    return application


async def serve(listen: str, api_client: kubernetes.client.ApiClient) -> web.AppRunner:
    """Start serving in kopf's loop; called from the startup handler, before STARTED is raised."""
    host, port = listen_address(listen)
    runner = web.AppRunner(app(Readiness(STARTED, api_reacher(api_client))))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
