"""Dynamic batching: images from concurrent requests run through the network together.

Each request puts its decoded images on one queue and waits; a single task runs them
through the network in batches of up to `max_batch`, in a thread of its own or awaiting
the network's process (serve/network.py), so the event loop keeps reading requests
meanwhile. A batch starts as soon as the network is
free: images that queued while the previous batch ran go together at once, and an
image that finds the network idle does not wait for a batch to fill. It waits only for
requests that the server is reading or decoding at that moment (`expecting`), which
are a fraction of a millisecond away, and for at most `max_wait` seconds from its own
arrival: so a lone request costs one forward pass and no wait, while a burst of
requests shares one. The queue is bounded: a request that would overflow it is
refused at once (the server answers 503) rather than left to wait longer than any
client would.

On a CPU, batching buys what GEMM efficiency buys; its main gift is that N waiting
requests cost one forward pass instead of N, each with its own overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds `max_queue` images already; the caller should retry later."""


@dataclass
class Waiting:
    item: Any  # what the run function takes, one image's worth
    future: asyncio.Future  # set to what the run function returned for it
    arrived: float  # time.monotonic() when it was queued
    started: float = 0.0  # and when the forward pass of its batch started, and ended
    ended: float = 0.0


@dataclass
class Counters:
    """What the batcher has done, for /metadata."""

    images: int = 0  # images answered
    forward_passes: int = 0  # batches run; fewer than `images` when batching works
    rejected: int = 0  # images refused because the queue was full
    batch_sizes: Counter = field(default_factory=Counter)  # batch size -> passes


class Batcher:
    """Runs `run(items) -> results` (one result per item, in order) on batches of items
    submitted by concurrent coroutines: in a thread of its own, or awaited on the event
    loop when `run` is a coroutine function (one that waits for another process)."""

    def __init__(self, run: Callable[[list[Any]], Sequence[Any] | Awaitable[Sequence[Any]]],
                 max_batch: int, max_wait: float, max_queue: int) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait >= 0. "
                             f"Received: {max_batch}, {max_queue}, {max_wait}")
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.counters = Counters()
        self._queue: deque[Waiting] = deque()
        self._expected = 0  # requests being read or decoded, whose images are on their way
        self._running = 0  # images in the forward pass now
        self._news = asyncio.Event()  # set when an image is queued or an expected one is not
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cnnzoo-forward")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self, seconds: float = 30) -> None:
        """Answer what is queued and running, then stop (the server is draining); after
        `seconds` (a network that never answers) stop all the same."""
        deadline = time.monotonic() + seconds
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> int:
        """Images in the forward pass running now."""
        return self._running

    @property
    def queued(self) -> int:
        """Images waiting for a forward pass now (not those in the one running)."""
        return len(self._queue)

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Around reading and decoding a request: a batch that would start meanwhile
        waits for its images (at most `max_wait`). Leave it before `submit`."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1
            self._news.set()

    async def submit(self, items: list[Any], timings: dict[str, float] | None = None
                     ) -> list[Any]:
        """The results for `items`, once their batches have run; QueueFull when they
        do not fit in the queue (then none of them is queued). `timings`, if given,
        gets the seconds from queueing to the start of the last batch that ran them
        (`queue`) and that batch's forward pass (`forward`)."""
        if len(self._queue) + len(items) > self.max_queue:
            self.counters.rejected += len(items)
            raise QueueFull(f"{len(self._queue)} images are waiting already (at most "
                            f"{self.max_queue})")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        waiting = [Waiting(item, loop.create_future(), now) for item in items]
        self._queue.extend(waiting)
        self._news.set()
        results = list(await asyncio.gather(*(entry.future for entry in waiting)))
        if timings is not None:
            last = max(waiting, key=lambda entry: entry.started)
            timings.update(queue=last.started - now, forward=last.ended - last.started)
        return results

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._news.clear()
                await self._news.wait()
            await self._gather(self._queue[0].arrived + self.max_wait)
            batch = [self._queue.popleft()
                     for _ in range(min(self.max_batch, len(self._queue)))]
            await self._run(loop, batch)

    async def _gather(self, deadline: float) -> None:
        """Wait until the batch is full, nothing more is on its way, or `deadline`."""
        while len(self._queue) < self.max_batch and self._expected:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._news.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError from 3.11 on
                await asyncio.wait_for(self._news.wait(), left)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Waiting]) -> None:
        started = time.monotonic()
        self._running = len(batch)
        try:
            items = [entry.item for entry in batch]
            if inspect.iscoroutinefunction(self.run):
                results = await self.run(items)
            else:
                results = await loop.run_in_executor(self._executor, self.run, items)
        except Exception as exc:  # every waiting request hears of it, none hangs
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        finally:
            self._running = 0
        self.counters.forward_passes += 1
        self.counters.images += len(batch)
        self.counters.batch_sizes[len(batch)] += 1
        ended = time.monotonic()
        for entry, result in zip(batch, results, strict=True):
            entry.started, entry.ended = started, ended
            if not entry.future.done():  # a client that went away has a cancelled one
                entry.future.set_result(result)
