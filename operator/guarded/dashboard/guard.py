"""Who may talk to the dashboard. It acts with the user's credentials, so it must not lend them to
anyone else who can reach the port:

* other local users, and any web page the user visits, can send requests to 127.0.0.1: every API request
  needs a random secret token in the `X-Guarded-Token` header (compared in constant time). The printed
  URL carries it in its fragment (`#token=...`), which browsers never send to any server; the page moves
  it to sessionStorage, which is per origin (port included), and out of the address bar. It is never a
  cookie: cookies are host-wide (every port of 127.0.0.1 would receive it, SameSite ignores ports). The
  page's static files (index, script, style) hold no data and need no token;
* a page on another site may point its own host name at 127.0.0.1 (DNS rebinding) to read our answers as
  its own origin: the Host header must name the address we listen on;
* a page on another site may submit to us (CSRF): it cannot know the token nor set a custom header
  without our consent, and besides a request that changes anything (POST) must come from our own origin
  (Origin header, and Sec-Fetch-Site when the browser sends it) and be JSON.

The checks are pure functions of the request's headers; `middleware` applies them.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

TOKEN_HEADER = "X-Guarded-Token"
PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})   # and /static/*: the page itself, no data
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

    def refusal(self, *, method: str, path: str, host: str | None, token: str | None, origin: str | None,
                fetch_site: str | None, content_type: str | None) -> tuple[int, str] | None:
        """(HTTP status, why) when the request must be refused, else None."""
        if not self.host_ok(host):
            return 421, f"unexpected Host header {host!r}: the dashboard answers to {', '.join(sorted(self.hosts))}"
        if method in ("GET", "HEAD") and is_public(path):
            return None
        if not self.token_ok(token):
            return 401, f"missing or wrong {TOKEN_HEADER} header: open the URL kubectl guarded dashboard printed"
        if method not in ("GET", "HEAD"):
            if not self.origin_ok(origin, fetch_site):
                return 403, f"cross-site request refused (Origin {origin!r}, Sec-Fetch-Site {fetch_site!r})"
            if (content_type or "").split(";")[0].strip() != "application/json":
                return 415, "requests that change something must be application/json"
        return None


def is_public(path: str) -> bool:
    """The page's own files: they hold no data, so a browser loads them without the token."""
    return path in PUBLIC_PATHS or (path.startswith("/static/") and "/" not in path.removeprefix("/static/"))


def middleware(guard: Guard) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path.startswith("//"):
            # A path like //evil.example/ is only ever a mistake or a trick: never echo it into a redirect.
            response: web.StreamResponse = web.Response(status=404, text="not found\n")
            response.headers.update(SECURITY_HEADERS)
            return response
        refused = guard.refusal(method=request.method, path=request.path, host=request.headers.get("Host"),
                                token=request.headers.get(TOKEN_HEADER), origin=request.headers.get("Origin"),
                                fetch_site=request.headers.get("Sec-Fetch-Site"),
                                content_type=request.headers.get("Content-Type"))
        if refused is not None:
            response = web.Response(status=refused[0], text=refused[1] + "\n")
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
