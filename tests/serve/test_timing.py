"""The Server-Timing header: added to every HTTP answer with the app's own time, and
read back by the load generator."""

from __future__ import annotations

import asyncio

import pytest

from cnnzoo.serve.timing import ServerTiming, server_seconds


def _serve(app, scope_type: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(ServerTiming(app)({"type": scope_type}, receive, send))
    return sent


def test_the_header_holds_at_least_the_time_the_app_took() -> None:
    async def slow(scope, receive, send) -> None:
        await asyncio.sleep(0.02)
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    start, body = _serve(slow)
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"  # the app's own are kept
    assert start["status"] == 404 and body["body"] == b"{}"
    assert server_seconds(headers[b"server-timing"]) >= 0.02


def test_other_scopes_pass_through_untouched() -> None:
    async def app(scope, receive, send) -> None:
        await send({"type": "lifespan.startup.complete"})

    assert _serve(app, "lifespan") == [{"type": "lifespan.startup.complete"}]


@pytest.mark.parametrize(("value", "seconds"), [
    ("app;dur=1.5", 0.0015),
    (b"app;dur=12", 0.012),
    ("cache;desc=hit, app;dur=0.25", 0.00025),
    ("app ; desc=\"x\" ; dur = 2", 0.002),
    ("db;dur=3", None),
    ("app", None),
    ("app;dur=fast", None),
])
def test_server_seconds_reads_the_app_metric(value, seconds) -> None:
    assert server_seconds(value) == (pytest.approx(seconds) if seconds else None)
