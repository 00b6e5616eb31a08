"""The server's own time for each request, as a `Server-Timing` header (W3C Server
Timing): `Server-Timing: app;dur=1.234`, in milliseconds, from the app receiving the
request to its answer starting. It covers reading and decoding the body, waiting for
a batch, the forward pass and the JSON; not the HTTP parsing before the app is called,
nor the time a request waits in the socket while the event loop is busy.

Browsers' developer tools show it per request; scripts/bench_serve.py reads it from
each answer, so that a load test whose clients share the server's cores can tell the
server's part of a latency from the rest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

HEADER = b"server-timing"
METRIC = "app"


class ServerTiming:
    """ASGI middleware that adds the `Server-Timing` header to every HTTP answer."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                spent = (time.perf_counter() - start) * 1e3
                headers = [*message.get("headers", ()),
                           (HEADER, f"{METRIC};dur={spent:.3f}".encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


def server_seconds(value: str | bytes) -> float | None:
    """The `app` duration of a `Server-Timing` header value, in seconds (None when the
    header has no such metric)."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    for metric in text.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if name != METRIC:
            continue
        for param in params:
            key, _, number = param.partition("=")
            if key.strip() == "dur":
                try:
                    return float(number) / 1e3
                except ValueError:
                    return None
    return None
