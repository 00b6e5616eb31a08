"""A load generator for `cnnzoo serve` on 127.0.0.1 (scripts/bench_serve.py): closed-loop
clients for the saturated rate, an open-loop schedule for latency.

The clients run in the measuring process, on the same CPU as the server, so they are as
cheap as a Python client gets: one asyncio loop writing requests and reading answers on
kept-alive connections (as a client library's pool keeps them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import NamedTuple

from cnnzoo.serve.timing import HEADER, server_timing

# A kept-alive connection idle this long is not reused: uvicorn closes them after 5 s.
KEEP_ALIVE_SECONDS = 2.0


def post(body: bytes) -> bytes:
    """A POST /predict of `body` as a PNG, as the bytes on the wire (HTTP/1.1 keeps the
    connection open)."""
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No garbage collection in the clients while they measure: in a process that has
    imported torch (the benchmark's, for the ceiling), a full pass took 50-90 ms, which
    held up every client at once and showed as the server's tail."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Reply(NamedTuple):
    status: int
    server: dict[str, float]  # the server's own seconds for it by part (Server-Timing)


async def answer(reader: asyncio.StreamReader) -> Reply:
    """Reads one response off the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length, server = 0, {}
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == HEADER:
            server = server_timing(value)
    await reader.readexactly(length)
    return Reply(int(head[9:12]), server)


def saturate(port: int, bodies: list[bytes], clients: int, seconds: float) -> float:
    """Requests/s with `clients` closed-loop clients for `seconds`."""

    async def client(k: int, stop: float) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answered, i = 0, k
        while time.monotonic() < stop:
            writer.write(post(bodies[i % len(bodies)]))
            answered += (await answer(reader)).status == 200
            i += clients
        writer.close()
        return answered

    async def run() -> float:
        start = time.monotonic()
        done = await asyncio.gather(*(client(k, start + seconds) for k in range(clients)))
        return sum(done) / (time.monotonic() - start)

    with collector_off():
        return asyncio.run(asyncio.wait_for(run(), seconds + 120))


class Latencies(NamedTuple):
    measured: list[float]  # seconds from sending each request to its answer
    late: list[float]  # seconds each request was sent after it was due
    server: list[dict[str, float]]  # the server's own seconds for each, by part


def latencies(port: int, bodies: list[bytes], rate: float, seconds: float) -> Latencies:
    """Requests due at `rate`/s for `seconds`: their latencies, how late each was sent,
    and the server's own time for each, as far as it said.

    Open loop: a request is sent when it is due, on an idle kept-alive connection or a
    new one when all are busy, so a slow answer cannot hold back the next request. It
    is timed from when it is sent: asyncio's timers wake up to a millisecond late (epoll
    counts milliseconds), and that lateness is the client's, reported apart."""
    total = max(1, int(rate * seconds))
    idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
    measured: list[float] = []
    late: list[float] = []
    server: list[dict[str, float]] = []

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while idle:  # the most recently used first; the server closes long-idle ones
            used, reader, writer = idle.pop()
            if time.monotonic() - used < KEEP_ALIVE_SECONDS:
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", port)

    async def send(k: int, due: float) -> None:
        sent = time.monotonic()
        late.append(sent - due)
        reader, writer = await connection()
        writer.write(post(bodies[k % len(bodies)]))
        reply = await answer(reader)
        if reply.status != 200:
            raise RuntimeError(f"the server refused a request at {rate:.0f} requests/s")
        measured.append(time.monotonic() - sent)
        server.append(reply.server)
        idle.append((time.monotonic(), reader, writer))

    async def run() -> None:
        start = time.monotonic() + 0.2
        sending = []
        for k in range(total):
            due = start + k / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sending.append(asyncio.ensure_future(send(k, due)))
        await asyncio.gather(*sending)
        for _, _, writer in idle:
            writer.close()

    with collector_off():
        asyncio.run(asyncio.wait_for(run(), seconds + 120))
    return Latencies(measured, late, server)
