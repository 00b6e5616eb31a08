"""The server's own time for each request, as a `Server-Timing` header (W3C Server
Timing), in milliseconds:

    Server-Timing: read;dur=0.21, queue;dur=1.80, forward;dur=0.62, app;dur=2.95

`app` runs from the app receiving the request to its answer starting: it covers
reading and decoding the body, waiting for a batch, the forward pass and the JSON; not
the HTTP parsing before the app is called, nor the time a request waits in the socket
while the event loop is busy. The parts, where a route reports them (POST /predict and
/predict/batch): `read` until its images were queued, `queue` from then until the
forward pass of its (last) batch started, `forward` that pass; what `app` holds beyond
them is the event loop coming back to the request and writing its answer.

Browsers' developer tools show the header per request; scripts/bench_serve.py reads it
from each answer, so that a load test whose clients share the server's cores can tell
the server's part of a latency from the rest, and which part of the server's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

HEADER = b"server-timing"
SCOPE_KEY = "cnnzoo.trace"  # where a route finds the request's Trace in its scope
TOTAL = "app"


@dataclass
class Trace:
    """One request's timings: seconds per named part, `app` set last."""

    start: float = field(default_factory=time.perf_counter)
    parts: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """`name` is the time from the request's start until now."""
        self.parts[name] = time.perf_counter() - self.start

    def header(self) -> bytes:
        return ", ".join(f"{name};dur={seconds * 1e3:.3f}"
                         for name, seconds in self.parts.items()).encode()


def trace_of(scope: MutableMapping[str, Any]) -> Trace | None:
    """The Trace that ServerTiming keeps for this request, if it runs."""
    return scope.get(SCOPE_KEY)


class ServerTiming:
    """ASGI middleware that adds the `Server-Timing` header to every HTTP answer."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = scope[SCOPE_KEY] = Trace()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                trace.mark(TOTAL)
                message = {**message,
                           "headers": [*message.get("headers", ()), (HEADER, trace.header())]}
            await send(message)

        await self.app(scope, receive, timed)


def server_timing(value: str | bytes) -> dict[str, float]:
    """The durations of a `Server-Timing` header value, in seconds by metric name
    (metrics without a readable `dur` are left out)."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    durations = {}
    for metric in text.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, number = param.partition("=")
            if key.strip() == "dur":
                with contextlib.suppress(ValueError):  # an unreadable one is left out
                    durations[name] = float(number) / 1e3
    return durations
