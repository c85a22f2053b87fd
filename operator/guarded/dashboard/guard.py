"""Who may talk to the dashboard. It acts with the user's credentials, so it must not lend them to
anyone else who can reach the port:

* other local users, and any web page the user visits, can send requests to 127.0.0.1: every request
  needs a random secret token, given once in the printed URL and kept in an HttpOnly, SameSite=Strict
  cookie from then on (compared in constant time);
* a page on another site may point its own host name at 127.0.0.1 (DNS rebinding) to read our answers as
  its own origin: the Host header must name the address we listen on;
* a page on another site may submit to us with the user's cookie (CSRF): a request that changes anything
  (POST) must come from our own origin (Origin header, and Sec-Fetch-Site when the browser sends it) and
  be JSON, which a plain form cannot send.

The checks are pure functions of the request's headers; `middleware` applies them.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "guarded_dashboard"
TOKEN_PARAM = "token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {
    # Our own scripts only, no framing (clickjacking), no referrer carrying a path out. plotly.js sets
    # inline styles on its SVG, hence 'unsafe-inline' for styles (never for scripts).
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Guard:
    token: str
    hosts: frozenset[str]   # the Host header values we answer to: "127.0.0.1:8123", "localhost:8123", ...

    @classmethod
    def for_address(cls, token: str, address: str, port: int) -> Guard:
        names = {address if ":" not in address else f"[{address}]"}
        if address in ("127.0.0.1", "::1", "localhost"):
            names |= set(LOOPBACK_NAMES)
        return cls(token=token, hosts=frozenset(f"{n}:{port}" for n in names))

    def host_ok(self, host: str | None) -> bool:
        return host is not None and host.lower() in self.hosts

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def origin_ok(self, origin: str | None, fetch_site: str | None) -> bool:
        """A change must come from a page we served: Origin http://<one of our hosts>, same-origin fetch."""
        if origin is None or fetch_site not in (None, "same-origin"):
            return False
        parts = urlsplit(origin)
        return parts.scheme == "http" and parts.netloc.lower() in self.hosts and not parts.path

    def refusal(self, *, method: str, host: str | None, cookie: str | None, query_token: str | None,
                origin: str | None, fetch_site: str | None, content_type: str | None) -> tuple[int, str] | None:
        """(HTTP status, why) when the request must be refused, else None."""
        if not self.host_ok(host):
            return 421, f"unexpected Host header {host!r}: the dashboard answers to {', '.join(sorted(self.hosts))}"
        if not (self.token_ok(cookie) or self.token_ok(query_token)):
            return 401, "missing or wrong token: open the URL kubectl guarded dashboard printed"
        if method not in ("GET", "HEAD"):
            if not self.origin_ok(origin, fetch_site):
                return 403, f"cross-site request refused (Origin {origin!r}, Sec-Fetch-Site {fetch_site!r})"
            if (content_type or "").split(";")[0].strip() != "application/json":
                return 415, "requests that change something must be application/json"
        return None


def middleware(guard: Guard) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        query_token = request.query.get(TOKEN_PARAM)
        refused = guard.refusal(method=request.method, host=request.headers.get("Host"),
                                cookie=request.cookies.get(COOKIE), query_token=query_token,
                                origin=request.headers.get("Origin"),
                                fetch_site=request.headers.get("Sec-Fetch-Site"),
                                content_type=request.headers.get("Content-Type"))
        if refused is not None:
            response: web.StreamResponse = web.Response(status=refused[0], text=refused[1] + "\n")
        elif query_token is not None and request.method == "GET":
            # The token moves from the URL into the cookie, and the URL (history, screen) loses it.
            response = web.Response(status=303, headers={
                "Location": str(request.rel_url.with_query({k: v for k, v in request.query.items()
                                                             if k != TOKEN_PARAM}))})
            response.set_cookie(COOKIE, guard.token, httponly=True, samesite="Strict", path="/")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # not a Response in aiohttp 3.14: answer it as one
                response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/static/") and response.status == 200:
            response.headers["Cache-Control"] = "private, max-age=3600"  # plotly.js is 4.6 MB
        return response
    return check
