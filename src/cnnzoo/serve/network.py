"""The server's network, loaded; by default in a process of its own, which the event loop
speaks to over a socket pair (`cnnzoo serve --network thread` keeps it in a thread).

Why a process: in one process the forward pass and the event loop share one GIL. A
forward thread that wants it back while the loop is busy waits for the loop to let go,
up to CPython's 5 ms switch interval each time, so on lenet5 a batch of one image that
computes in 0.2 ms took 0.7 ms at the median and up to 6.5 ms in the server
(docs/serving.md). In its own process the network never waits for the loop's GIL, and
the loop waits for the answer the way it waits for a socket, without a thread.

The two speak in frames: a kind byte and the payload's length (FRAME), then the payload.
The server sends BATCH (the uint8 pixels' shape, then the pixels); the network answers
RANKED (the count of images and of classes each, then the float32 values and the int32
classes of `Predictor.rank`) or FAILED (the error, as text; it goes on serving). On
start it says READY (JSON: how it runs) or FAILED and ends. It ignores SIGINT and
SIGTERM: the server ends it by closing the socket once the requests in flight are
answered, and a server that dies closes it too. A network process that ends during a
batch fails that batch's requests (503) and starts again for the next batch, or for
/health (503 until it is up); after a start that failed, batches are refused (503) for
RETRY_SECONDS before the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from cnnzoo.errors import CnnzooError
from cnnzoo.serve.onecall import one_call
from cnnzoo.serve.options import ServeOptions
from cnnzoo.tools.predict.predictor import Prediction, Predictor, check_backend

FRAME = struct.Struct("<cI")  # kind, payload bytes
SHAPE = struct.Struct("<4I")  # images, depth, height, width of the uint8 pixels after it
COUNTS = struct.Struct("<2I")  # images, classes each, of the values and classes after it
READY, BATCH, RANKED, FAILED = b"Y", b"B", b"R", b"E"
START_SECONDS = 600  # the longest a network process may take to load and warm up
RETRY_SECONDS = 5.0  # after a failed start, batches are refused this long before another


class NetworkFailed(Exception):
    """The network raised on a batch; its requests are answered 500, the server goes on."""


class NetworkDown(Exception):
    """The network's process ended during a batch (it starts again for the next one),
    or cannot start; the batch's requests are answered 503."""


def use_threads(threads: int | None) -> None:
    """Set the network's threads in this process (onnxruntime takes torch's number)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def settle() -> None:
    """Once the network is loaded, before serving: what the process holds by then (torch
    and the network, about 190,000 objects that live as long as it does) is left out of
    the garbage collector's passes. A full pass over them takes about 90 ms (lenet5's
    server on the 2-core AMD EPYC), a stall of every request in flight; frozen, a few
    microseconds."""
    gc.collect()
    gc.freeze()


def load_predictor(options: ServeOptions) -> Predictor:
    """The network `options` name, loaded where it will run; torch's as one call where
    it can be. With the network in a process of its own, the server's copy (for labels,
    metadata and the answers' assembly) stays on the CPU, and the device is checked here
    so that a wrong one is the server's message, before any process starts."""
    device = options.device
    if options.network == "process":
        check_backend(options.backend, options.device)
        device = "cpu"
    predictor = Predictor(options.source, pretrained=options.pretrained,
                          backend=options.backend, device=device, top=options.top)
    if options.network == "thread":
        one_call(predictor)
    return predictor


def _receive(sock: socket.socket) -> tuple[bytes, bytearray]:
    """One frame from a blocking socket; EOFError when the other side has closed it."""
    kind, size = FRAME.unpack(_exactly(sock, FRAME.size))
    return kind, _exactly(sock, size)


def _exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        read = sock.recv_into(view[got:])
        if not read:
            raise EOFError
        got += read
    return buffer


def _frame(kind: bytes, *parts: bytes) -> bytes:
    return FRAME.pack(kind, sum(len(part) for part in parts)) + b"".join(parts)


class NetworkProcess:
    """The network in a child process: `start` (blocking), `answer` (from the event loop,
    one batch at a time), `stop`."""

    def __init__(self, options: ServeOptions, predictor: Predictor) -> None:
        self.options = options
        self.predictor = predictor  # the server's copy: it assembles the answers
        self.process: subprocess.Popen | None = None
        self.runs_as = ""
        self.starts = 0
        self._socket: socket.socket | None = None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock: asyncio.Lock | None = None
        self._retry_at = 0.0  # no new start before this time.monotonic(), after one failed
        self._last_failure = ""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def up(self) -> bool:
        """Whether the network's process runs and its socket is open."""
        return (self._socket is not None and self.process is not None
                and self.process.poll() is None)

    def start(self) -> None:
        """Start the network's process and wait until it has loaded and warmed up the
        network; CnnzooError with its message when it cannot."""
        ours, theirs = socket.socketpair()
        try:
            with theirs:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "cnnzoo.serve.network", str(theirs.fileno()),
                     json.dumps(asdict(self.options))],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
            ours.settimeout(START_SECONDS)
            payload = self._ready(ours)
        except BaseException:
            ours.close()
            raise
        self.runs_as = json.loads(payload)["runs_as"]
        self.predictor.runs_as = self.runs_as
        self.starts += 1
        ours.setblocking(False)
        self._socket, self._streams = ours, None

    def _ready(self, ours: socket.socket) -> bytearray:
        """READY's payload; CnnzooError for FAILED's message, an end or a timeout."""
        assert self.process is not None
        try:
            kind, payload = _receive(ours)
        except TimeoutError:
            self.process.kill()
            self.process.wait()
            raise CnnzooError(f"the network's process was not ready within {START_SECONDS} "
                              "s and was stopped") from None
        except (EOFError, OSError):
            code = self.process.wait(START_SECONDS)
            raise CnnzooError(f"the network's process ended before it was ready (exit code "
                              f"{code}); its output above says why") from None
        if kind != READY:
            self.process.wait(START_SECONDS)  # it ends right after saying why
            raise CnnzooError(payload.decode())
        return payload

    async def ensure_up(self) -> None:
        """Start the network's process again where it has ended (at most once every
        RETRY_SECONDS); NetworkDown when it cannot."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            await self._ensure_up()

    async def _ensure_up(self) -> None:
        if self.up:
            return
        if time.monotonic() < self._retry_at:
            raise NetworkDown(f"the network's process cannot start: {self._last_failure}")
        self._close()
        loop = asyncio.get_running_loop()
        if self.process is not None and self.process.poll() is None:  # its socket broke
            self.process.kill()
            await loop.run_in_executor(None, self.process.wait)
        try:
            await loop.run_in_executor(None, self.start)
        except Exception as exc:  # any reason, as JSON to the waiting requests
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self._last_failure = str(exc) if isinstance(exc, CnnzooError) else repr(exc)
            raise NetworkDown(f"the network's process cannot start: {self._last_failure}"
                              ) from None

    async def answer(self, items: list[tuple[str, np.ndarray]]) -> list[Prediction]:
        """The predictions for (name, uint8 pixels) items, from the network's process;
        NetworkFailed or NetworkDown when it has none."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            await self._ensure_up()
            values, index = await self._exchange(np.stack([pixels for _, pixels in items]))
        return self.predictor.predictions([name for name, _ in items], [None] * len(items),
                                          values, index)

    async def _exchange(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One BATCH frame out and its answer in: (values, classes)."""
        assert self._socket is not None
        if self._streams is None:  # made in the loop that uses them
            self._streams = await asyncio.open_connection(sock=self._socket)
        reader, writer = self._streams
        try:
            writer.write(_frame(BATCH, SHAPE.pack(*pixels.shape), pixels.tobytes()))
            kind, size = FRAME.unpack(await reader.readexactly(FRAME.size))
            payload = await reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._close()
            raise NetworkDown(f"the network's process ended ({await self._ending()}) during "
                              "this batch; it starts again for the next one") from None
        if kind == FAILED:
            raise NetworkFailed(f"the network failed on this batch: {payload.decode()}")
        images, count = COUNTS.unpack_from(payload)
        values = np.frombuffer(payload, np.float32, images * count, COUNTS.size)
        index = np.frombuffer(payload, np.int32, images * count, COUNTS.size + 4 * images * count)
        return values.reshape(images, count), index.reshape(images, count)

    async def _ending(self) -> str:
        """How the process ended, as far as a second tells: its socket closes as it
        exits, a moment before its exit code is there to read."""
        for _ in range(20):
            code = None if self.process is None else self.process.poll()
            if code is not None:
                return f"exit code {code}"
            await asyncio.sleep(0.05)
        return "still exiting"

    def _close(self) -> None:
        if self._streams is not None:
            try:
                self._streams[1].close()
            except RuntimeError:  # its event loop has closed (a second Ctrl-C)
                if self._socket is not None:
                    self._socket.close()
        elif self._socket is not None:
            self._socket.close()
        self._socket, self._streams = None, None

    async def aclose(self) -> int | None:
        """`stop` from the event loop that uses the socket (its streams close there)."""
        if self._streams is not None:
            writer = self._streams[1]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._socket, self._streams = None, None
        return await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def stop(self, seconds: float = 30) -> int | None:
        """Close the socket, which ends the network's process; its exit code. Outside
        the event loop, or before it used the socket: in it, `aclose`."""
        self._close()
        if self.process is None:
            return None
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _serve_batches(sock: socket.socket, predictor: Predictor) -> None:
    """Answer BATCH frames until the server closes the socket."""
    count = predictor.classes_per_answer()
    while True:
        try:
            kind, payload = _receive(sock)
        except (EOFError, OSError):  # closed, or reset by a server that died mid-batch
            return
        try:
            if kind != BATCH:
                raise ValueError(f"a frame of kind {kind!r}, not a batch")
            images, depth, height, width = SHAPE.unpack_from(payload)
            pixels = np.frombuffer(payload, np.uint8, offset=SHAPE.size).reshape(
                images, depth, height, width)
            values, index = predictor.rank(pixels, count)
            answer = _frame(RANKED, COUNTS.pack(images, count),  # no copy of float32 values
                            np.asarray(values, np.float32).tobytes(),
                            index.astype(np.int32).tobytes())
        except Exception as exc:  # one bad batch fails its requests, not the server
            answer = _frame(FAILED, f"{type(exc).__name__}: {exc}".encode())
        try:
            sock.sendall(answer)
        except OSError:  # the server is gone
            return


def main(argv: list[str]) -> int:
    """The network's process: `python -m cnnzoo.serve.network FD OPTIONS_JSON`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server ends it, once drained
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    options: dict[str, Any] = json.loads(argv[1])
    try:
        served = ServeOptions(**{**options, "network": "thread"})  # load it to run here
        use_threads(served.threads)
        predictor = load_predictor(served)
        volume = predictor.volume
        predictor.rank(np.zeros((1, volume.depth, volume.height, volume.width), np.uint8),
                       predictor.classes_per_answer())  # warm up
    except Exception as exc:
        message = str(exc) if isinstance(exc, CnnzooError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):  # the server may be gone already
            sock.sendall(_frame(FAILED, message.encode()))
        return 2
    settle()
    try:
        sock.sendall(_frame(READY, json.dumps({"runs_as": predictor.runs_as}).encode()))
    except OSError:
        return 0
    with sock:
        _serve_batches(sock, predictor)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
