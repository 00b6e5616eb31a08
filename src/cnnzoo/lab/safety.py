"""What a local web server must refuse, because any page the user visits can send
requests to 127.0.0.1: a foreign `Host` (DNS rebinding), a state-changing request
from a foreign `Origin`, any request without the token when the server listens
beyond this machine, and bodies over their size cap. One ASGI middleware, so that
it guards every route, the event streams included; its refusals are JSON."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "cnnzoo_lab_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A token like Jupyter's: 24 random bytes as hex."""
    return secrets.token_hex(24)


@dataclass(frozen=True)
class Guard:
    """The rules for one server: where it listens, and its token (None: none needed)."""

    host: str  # the address the server is bound to
    port: int
    token: str | None = None

    @property
    def own_hosts(self) -> frozenset[str]:
        """The Host headers that name this server. Bound beyond loopback, the server's
        names are whatever the network calls it; the token guards it there instead."""
        names = LOOPBACK_NAMES if is_loopback(self.host) else (self.host,)
        return frozenset(f"{name}:{self.port}" for name in names)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, message) when the request must be refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if is_loopback(self.host) and host.lower() not in self.own_hosts:
            return 403, (f"the Host header {host[:80]!r} does not name this server; open "
                         f"http://127.0.0.1:{self.port}/")
        origin = headers.get("origin")
        changes = scope.get("method", "GET") not in SAFE_METHODS
        if changes and origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return 403, (f"a request from the page {origin[:80]!r} may not change "
                         "anything here; use the lab's own page")
        if self.token is not None and not self._has_token(scope, headers):
            return 401, ("this lab needs its token: open the URL it printed (with "
                         "?token=...) or send 'Authorization: Bearer TOKEN'")
        return None

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        given += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is the same as none
            cookie = SimpleCookie()
        if COOKIE in cookie:
            given.append(cookie[COOKIE].value)
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given)


class GuardMiddleware:
    """Applies a `Guard` to every HTTP request before the app sees it; with a token,
    a page opened with ?token=T gets it as a same-site cookie, so the page's own
    requests carry it."""

    def __init__(self, app: App, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.guard.refusal(scope)
        if refused is not None:
            await send_json_error(send, *refused)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self.guard.token is None or "token" not in query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.guard.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []),
                                      (b"set-cookie", cookie.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def send_json_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
