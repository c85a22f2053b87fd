"""The dashboard's web server (aiohttp): the page, its JSON endpoints and the buttons.

Every API call is the plugin's own (`guarded.cli.kube.Kube`, blocking) and runs in a worker thread, as
the user of the kubeconfig: the dashboard holds no identity of its own. The page polls the endpoints.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import kubernetes
from aiohttp import web

from guarded.cli.audit import Range, build_report, render_markdown
from guarded.cli.errors import CliError
from guarded.cli.kube import Kube
from guarded.cli.tables import parse_bound
from guarded.dashboard.actions import BadAction, run_action
from guarded.dashboard.chart import chart
from guarded.dashboard.guard import Guard, middleware, new_token
from guarded.dashboard.model import list_view, merge_records, rollout_view
from guarded.metrics.provider import MetricProvider

STATIC = Path(str(resources.files("guarded.dashboard") / "static"))
PAGES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
RECORDS_KEPT = 500   # analysis records remembered per rollout, beyond the few its status keeps
# Charts run on their own few threads, each within a deadline, so that a slow or unreachable Prometheus
# never holds the threads the list, the details and the buttons need.
CHART_THREADS = 2
CHART_SECONDS = 8.0
PROMETHEUS_QUERY_SECONDS = 2.0   # per query, no retries: the page asks again in a few seconds anyway


def plotly_js() -> Path:
    """plotly.js as the plotly package ships it (served from here: the page loads nothing from elsewhere)."""
    try:
        import plotly
    except ImportError:
        raise CliError("Error: the dashboard's charts need the plotly package: "
                       "pip install 'guarded-rollouts[dashboard]'") from None
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@dataclass
class Dashboard:
    """What the handlers share: the user's connection, the namespace (None: all), Prometheus."""

    kube: Kube
    namespace: str | None
    provider: MetricProvider | None
    records: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    chart_seconds: float = CHART_SECONDS
    chart_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CHART_THREADS, thread_name_prefix="dashboard-chart"))

    def whoami(self) -> dict[str, Any]:
        """The identity the API server sees for this kubeconfig (a SelfSubjectReview), or the context's name."""
        context = self.kube.context or "(current context)"
        try:
            review = kubernetes.client.AuthenticationV1Api(self.kube.api_client).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            info = review.status.user_info
            groups = [g for g in info.groups or [] if not g.startswith("system:")]
            return {"user": info.username, "groups": groups, "context": context}
        except Exception:  # an older API server, or one that does not allow it: the page says less
            return {"user": None, "groups": [], "context": context}

    def rollouts(self) -> tuple[list[dict[str, Any]], str, str]:
        """The rollouts the user may list: (items, scope, note). All namespaces unless one was given; when
        RBAC forbids listing across namespaces, the context's namespace."""
        if self.namespace is not None:
            return self.kube.list(self.namespace), f"namespace {self.namespace}", ""
        try:
            return self.kube.list(None), "all namespaces", ""
        except CliError as exc:
            if "(Forbidden)" not in exc.message:
                raise
            fallback = self.kube.namespace(None)
            return (self.kube.list(fallback), f"namespace {fallback}",
                    f"you may not list rollouts in all namespaces; showing namespace {fallback} (-n to choose)")

    def detail(self, namespace: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        obj = self.kube.get(namespace, name)
        key = (namespace, name, (obj.get("metadata") or {}).get("uid", ""))
        seen = self.records.setdefault(key, {})
        records = merge_records(seen, obj.get("status") or {})
        for stale in sorted(seen)[:-RECORDS_KEPT]:
            del seen[stale]
        return obj, records[-RECORDS_KEPT:]


def _error(exc: CliError) -> web.Response:
    status = 404 if "not found" in exc.message else 403 if "(Forbidden)" in exc.message else 502
    return web.json_response({"error": exc.message}, status=status)


async def _blocking(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def routes(dash: Dashboard) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/")
    async def index(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    @r.get("/favicon.ico")
    async def favicon(_: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    @r.get("/static/{file}")
    async def static(request: web.Request) -> web.StreamResponse:
        file = request.match_info["file"]
        if file == "plotly.min.js":
            return web.FileResponse(plotly_js(), headers={"Content-Type": "text/javascript"})
        if file not in PAGES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / file, headers={"Content-Type": PAGES[file]})

    @r.get("/api/whoami")
    async def whoami(_: web.Request) -> web.Response:
        return web.json_response(await _blocking(dash.whoami))

    @r.get("/api/rollouts")
    async def rollouts(_: web.Request) -> web.Response:
        try:
            items, scope, note = await _blocking(dash.rollouts)
        except CliError as exc:
            return _error(exc)
        return web.json_response({"scope": scope, "note": note, "items": list_view(items, datetime.now(UTC))})

    @r.get("/api/rollouts/{namespace}/{name}")
    async def rollout(request: web.Request) -> web.Response:
        try:
            obj, records = await _blocking(dash.detail, request.match_info["namespace"], request.match_info["name"])
        except CliError as exc:
            return _error(exc)
        return web.json_response(rollout_view(obj, records))

    @r.get("/api/rollouts/{namespace}/{name}/chart")
    async def rollout_chart(request: web.Request) -> web.Response:
        try:
            obj, records = await _blocking(dash.detail, request.match_info["namespace"], request.match_info["name"])
        except CliError as exc:
            return _error(exc)
        deadline = time.monotonic() + dash.chart_seconds
        work = asyncio.get_running_loop().run_in_executor(
            dash.chart_pool, functools.partial(chart, obj, dash.provider, records, datetime.now(UTC),
                                               deadline=deadline))
        try:  # a query already sent may outlast the deadline by its own timeout: give it that, then answer
            drawn = await asyncio.wait_for(work, dash.chart_seconds + 2 * PROMETHEUS_QUERY_SECONDS)
        except TimeoutError:
            drawn = {"unavailable": f"Prometheus did not answer within {dash.chart_seconds:g} s"}
        return web.json_response(drawn)

    @r.post("/api/rollouts/{namespace}/{name}/{action}")
    async def act(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        m = request.match_info
        try:
            outcome = await _blocking(run_action, dash.kube, m["action"], m["namespace"], m["name"], body)
        except BadAction as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": outcome.ok, "code": outcome.code, "output": outcome.output})

    @r.get("/api/audit")
    async def audit(request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        try:
            rng = Range(since=parse_bound(request.query["since"], now) if request.query.get("since") else None,
                        until=parse_bound(request.query["until"], now) if request.query.get("until") else None)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)

        def report() -> dict[str, Any]:
            items, scope, _ = dash.rollouts()
            namespace = None if scope == "all namespaces" else scope.removeprefix("namespace ")
            return build_report(items, dash.kube.list_approvals(namespace), rng=rng, now=now, scope=scope)
        try:
            built = await _blocking(report)
        except CliError as exc:
            return _error(exc)
        return web.json_response({"markdown": render_markdown(built), "report": built})

    return r


def make_app(dash: Dashboard, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[middleware(guard)])
    app.add_routes(routes(dash))
    return app


def check_address(address: str, *, insecure_remote: bool) -> str | None:
    """Refuse an address that would serve your identity to the network; a warning when allowed anyway.

    A wildcard (0.0.0.0, ::, "") listens on every interface: refused outright. Anything else that is not
    loopback needs --insecure-remote, and then the token crosses the network in clear text (plain HTTP).
    """
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM) if address else []
    except (socket.gaierror, UnicodeError) as exc:
        raise CliError(f"Error: --address {address!r} is not an address this machine can listen on: {exc}") from None
    ips = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not ips or any(ip.is_unspecified for ip in ips):
        raise CliError(f"Error: --address {address!r} listens on every interface: refused; "
                       "the dashboard acts as you, give it one address (default 127.0.0.1)")
    if all(ip.is_loopback for ip in ips):
        return None
    if not insecure_remote:
        raise CliError(f"Error: --address {address} is not loopback: anyone who can reach it and sees the token "
                       "acts as you; add --insecure-remote if you really mean it")
    return (f"Warning: listening on {address} over plain HTTP: the token and every answer cross the network "
            "in clear text; anyone who sees them acts as you")


def listening_socket(address: str, port: int) -> socket.socket:
    """The socket we serve on, bound before the app exists so a random port (0) is known for the Host check."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"Error: cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


async def _serve(dash: Dashboard, sock: socket.socket, url: str, guard: Guard, out: TextIO) -> None:
    runner = web.AppRunner(make_app(dash, guard), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        out.write(f"Serving the dashboard as your kubeconfig's identity at:\n  {url}\n"
                  "Open it in your browser; the URL holds a secret token: do not share it. Ctrl-C stops.\n")
        out.flush()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(dash: Dashboard, *, address: str, port: int, out: TextIO = sys.stdout) -> None:
    """Serve until interrupted; print the URL (with the token) once listening."""
    plotly_js()  # a missing plotly is said at once, not on the first chart
    sock = listening_socket(address, port)
    port = int(sock.getsockname()[1])
    token = new_token()
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{port}/#token={token}"  # a fragment: never sent to any server
    asyncio.run(_serve(dash, sock, url, Guard.for_address(token, address, port), out))
