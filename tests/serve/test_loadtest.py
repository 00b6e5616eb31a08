"""The load generator of scripts/bench_serve.py against a bare asyncio HTTP server that
counts what it is sent: every request arrives whole and every answer is read."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cnnzoo.serve.loadtest import Reply, answer, latencies, post, saturate


class CountingServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers each POST with 200 and a 2-byte
    body, keeping connections open, in a thread of its own."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                self.bodies.append(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 %d X\r\nServer-Timing: app;dur=0.5\r\n"
                             b"Content-Length: 2\r\n\r\nok" % self.status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server():
    running = CountingServer()
    yield running
    running.stop()


def test_post_is_one_whole_request() -> None:
    wire = post(b"\x89PNG")
    assert wire.startswith(b"POST /predict HTTP/1.1\r\n")
    assert b"Content-Length: 4\r\n\r\n\x89PNG" in wire


def _read(wire: bytes) -> tuple[Reply, bytes]:
    async def read() -> tuple[Reply, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(wire)
        reader.feed_eof()
        reply = await answer(reader)
        return reply, await reader.read(4)

    return asyncio.run(read())


def test_answer_reads_status_and_body() -> None:
    reply, after = _read(b"HTTP/1.1 503 Busy\r\nContent-Length: 3\r\n\r\nabcNEXT")
    assert reply == Reply(503, {})
    assert after == b"NEXT"  # the body is consumed, not the next one


def test_answer_reads_the_servers_own_time() -> None:
    reply, _ = _read(b"HTTP/1.1 200 OK\r\nServer-Timing: db;dur=9, app;dur=2.5\r\n"
                     b"Content-Length: 0\r\n\r\n")
    assert reply == Reply(200, {"db": 0.009, "app": 0.0025})


def test_saturate_counts_answered_requests(server: CountingServer) -> None:
    rate = saturate(server.port, [b"a", b"bb", b"ccc"], clients=4, seconds=0.3)
    assert rate > 0
    assert set(server.bodies) <= {b"a", b"bb", b"ccc"}
    # each client cycles through the bodies from its own offset
    assert {b"a", b"bb", b"ccc"} <= set(server.bodies)


def test_latencies_sends_the_scheduled_count(server: CountingServer) -> None:
    times, late, own = latencies(server.port, [b"x"], rate=100.0, seconds=0.2)
    assert len(times) == len(late) == 20 == len(server.bodies)
    assert all(t > 0 for t in times)
    assert own == [{"app": 0.0005}] * 20  # each answer's Server-Timing, in seconds


def test_a_refused_request_is_an_error() -> None:
    refusing = CountingServer(status=503)
    try:
        with pytest.raises(RuntimeError, match="refused"):
            latencies(refusing.port, [b"x"], rate=50.0, seconds=0.1)
    finally:
        refusing.stop()


def test_the_clients_measure_with_the_garbage_collector_off_and_restore_it():
    import gc

    from cnnzoo.serve.loadtest import collector_off

    assert gc.isenabled()
    with collector_off():
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
