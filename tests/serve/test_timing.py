"""The Server-Timing header: added to every HTTP answer with the app's own time, and
read back by the load generator."""

from __future__ import annotations

import asyncio

import pytest

from cnnzoo.serve.timing import ServerTiming, Trace, server_timing, trace_of


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
        trace = trace_of(scope)
        await asyncio.sleep(0.01)
        trace.mark("read")  # the app's own parts come first, app last
        trace.parts["forward"] = 0.0042
        await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    start, body = _serve(slow)
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"  # the app's own are kept
    assert start["status"] == 404 and body["body"] == b"{}"
    timing = server_timing(headers[b"server-timing"])
    assert list(timing) == ["read", "forward", "app"]
    assert timing["read"] >= 0.01 and timing["app"] >= timing["read"] + 0.01
    assert timing["forward"] == pytest.approx(0.0042)
    assert headers[b"server-timing"].startswith(b"read;dur=")


def test_other_scopes_pass_through_untouched() -> None:
    async def app(scope, receive, send) -> None:
        await send({"type": "lifespan.startup.complete"})

    assert _serve(app, "lifespan") == [{"type": "lifespan.startup.complete"}]


@pytest.mark.parametrize(("value", "durations"), [
    ("app;dur=1.5", {"app": 0.0015}),
    (b"app;dur=12", {"app": 0.012}),
    ("cache;desc=hit, read;dur=0.25, app;dur=3", {"read": 0.00025, "app": 0.003}),
    ("app ; desc=\"x\" ; dur = 2", {"app": 0.002}),
    ("app", {}),
    ("app;dur=fast, queue;dur=1", {"queue": 0.001}),
])
def test_server_timing_reads_each_metric_with_a_duration(value, durations) -> None:
    assert server_timing(value) == pytest.approx(durations)


def test_a_trace_header_lists_its_parts_in_milliseconds() -> None:
    trace = Trace(start=0.0, parts={"read": 0.0012345, "app": 0.5})
    assert trace.header() == b"read;dur=1.234, app;dur=500.000"
    assert server_timing(trace.header()) == pytest.approx({"read": 0.001234, "app": 0.5})
