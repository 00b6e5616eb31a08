"""The batcher on its own: concurrent submissions share one run of the network, the
queue refuses what does not fit, and a failing run reaches every waiting caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cnnzoo.serve.batcher import Batcher, QueueFull


def test_waiting_items_run_as_one_batch_in_order():
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [10 * x for x in items]

    async def main() -> list[list[int]]:
        batcher = Batcher(run, max_batch=8, max_wait=0.2, max_queue=64)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([i]) for i in range(5)),
                                       batcher.submit([5, 6]))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert answers == [[0], [10], [20], [30], [40], [50, 60]]
    assert calls == [[0, 1, 2, 3, 4, 5, 6]]  # seven images, one forward pass


def test_a_batch_is_never_larger_than_max_batch():
    sizes: list[int] = []

    def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    async def main() -> None:
        batcher = Batcher(run, max_batch=3, max_wait=0.05, max_queue=64)
        batcher.start()
        assert await asyncio.gather(*(batcher.submit([i]) for i in range(10))) == [
            [i] for i in range(10)]
        await batcher.stop()

    asyncio.run(main())
    assert max(sizes) <= 3 and sum(sizes) == 10 and len(sizes) >= 4


def test_a_full_queue_refuses_at_once_and_serves_again_once_drained():
    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        release.wait(5)  # the network is busy until the test says otherwise
        return items

    async def main() -> None:
        batcher = Batcher(run, max_batch=1, max_wait=0, max_queue=2)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([0]))  # taken into the running batch
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit([3])
        with pytest.raises(QueueFull):
            await batcher.submit([4, 5, 6])  # nothing of an oversized request is queued
        release.set()
        assert [await busy, *[await q for q in queued]] == [[0], [1], [2]]
        assert await batcher.submit([7]) == [7]
        assert batcher.counters.rejected == 4 and batcher.counters.images == 4
        await batcher.stop()

    asyncio.run(main())


def test_a_failing_run_fails_every_caller_of_its_batch_and_not_the_next():
    def run(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("bad luck")
        return items

    async def main() -> None:
        batcher = Batcher(run, max_batch=4, max_wait=0.1, max_queue=8)
        batcher.start()
        answers = await asyncio.gather(batcher.submit([13]), batcher.submit([1]),
                                       return_exceptions=True)
        assert all(isinstance(a, RuntimeError) for a in answers)
        assert await batcher.submit([2]) == [2]
        await batcher.stop()

    asyncio.run(main())
