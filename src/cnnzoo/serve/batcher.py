"""Dynamic batching: images from concurrent requests run through the network together.

Each request puts its decoded images on one queue and waits. A single task takes the
first waiting image, then more, until `max_batch` images are taken or `max_wait`
seconds have passed since that first image arrived (images that queued while the
previous batch ran are taken at once), and runs them as one forward pass in a thread
of its own, so the event loop keeps reading requests meanwhile. The queue is bounded:
a request that would overflow it is refused at once (the server answers 503) rather
than left to wait longer than any client would.

On a CPU, batching buys what GEMM efficiency buys; its main gift is that N waiting
requests cost one forward pass instead of N, each with its own overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
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


@dataclass
class Counters:
    """What the batcher has done, for /metadata."""

    images: int = 0  # images answered
    forward_passes: int = 0  # batches run; fewer than `images` when batching works
    rejected: int = 0  # images refused because the queue was full
    batch_sizes: Counter = field(default_factory=Counter)  # batch size -> passes


class Batcher:
    """Runs `run(items) -> results` (one result per item, in order) on batches of items
    submitted by concurrent coroutines."""

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], max_batch: int,
                 max_wait: float, max_queue: int) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait >= 0. "
                             f"Received: {max_batch}, {max_queue}, {max_wait}")
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.counters = Counters()
        self._queue: asyncio.Queue[Waiting] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cnnzoo-forward")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Answer what is queued, then stop (the server is draining)."""
        while not self._queue.empty():
            await asyncio.sleep(self.max_wait or 0.001)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        """The results for `items`, once their batches have run; QueueFull when they
        do not fit in the queue (then none of them is queued)."""
        if self._queue.qsize() + len(items) > self.max_queue:
            self.counters.rejected += len(items)
            raise QueueFull(f"{self._queue.qsize()} images are waiting already (at most "
                            f"{self.max_queue})")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        waiting = [Waiting(item, loop.create_future(), now) for item in items]
        for entry in waiting:
            self._queue.put_nowait(entry)
        return list(await asyncio.gather(*(entry.future for entry in waiting)))

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].arrived + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
                    break
            await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Waiting]) -> None:
        try:
            results = await loop.run_in_executor(self._executor, self.run,
                                                 [entry.item for entry in batch])
        except Exception as exc:  # every waiting request hears of it, none hangs
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        self.counters.forward_passes += 1
        self.counters.images += len(batch)
        self.counters.batch_sizes[len(batch)] += 1
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():  # a client that went away has a cancelled one
                entry.future.set_result(result)
