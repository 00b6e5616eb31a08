"""The batcher on its own: concurrent submissions share one run of the network, the
queue refuses what does not fit, and a failing run reaches every waiting caller. An
idle network runs a lone image at once; it waits only for requests still being read,
and never longer than max_wait. Loop turns and forward-pass counts decide, no clock."""

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


HOUR = 3600.0  # a max_wait no test may sit out: waiting it would hang the test, not pass


def recording(calls: list[list[int]]):
    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [10 * x for x in items]
    return run


async def loop_turns(count: int = 20) -> None:
    """Let every ready task run a step: the batcher decides without any clock."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_lone_image_on_an_idle_network_runs_at_once():
    calls: list[list[int]] = []

    async def main() -> None:
        batcher = Batcher(recording(calls), max_batch=8, max_wait=HOUR, max_queue=8)
        batcher.start()
        # It would wait an hour for company under the old rule; wait_for only keeps a
        # broken batcher from hanging the suite.
        assert await asyncio.wait_for(batcher.submit([1]), 60) == [10]
        assert await asyncio.wait_for(batcher.submit([2]), 60) == [20]
        await batcher.stop()

    asyncio.run(main())
    assert calls == [[1], [2]]


def test_images_queued_during_a_forward_pass_run_together_next_without_waiting():
    calls: list[list[int]] = []
    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        release.wait(30)  # the first pass is busy until the test says otherwise
        return items

    async def main() -> None:
        batcher = Batcher(run, max_batch=8, max_wait=HOUR, max_queue=8)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([0]))
        await loop_turns()
        later = [asyncio.ensure_future(batcher.submit([i])) for i in (1, 2, 3)]
        await loop_turns()
        assert batcher.queued == 3
        release.set()
        assert await asyncio.wait_for(asyncio.gather(busy, *later), 60) == [[0], [1], [2], [3]]
        await batcher.stop()

    asyncio.run(main())
    assert calls == [[0], [1, 2, 3]]


def test_an_idle_network_waits_for_a_request_being_read():
    calls: list[list[int]] = []

    async def main() -> None:
        batcher = Batcher(recording(calls), max_batch=8, max_wait=HOUR, max_queue=8)
        batcher.start()
        body_arrived = asyncio.Event()

        async def slow_request() -> list[int]:
            with batcher.expecting():  # its body is still arriving
                await body_arrived.wait()
            return await batcher.submit([2])

        slow = asyncio.ensure_future(slow_request())
        await loop_turns()
        first = asyncio.ensure_future(batcher.submit([1]))
        await loop_turns()
        assert batcher.queued == 1 and calls == []  # held for the request being read
        body_arrived.set()
        assert await asyncio.wait_for(asyncio.gather(first, slow), 60) == [[10], [20]]
        await batcher.stop()

    asyncio.run(main())
    assert calls == [[1, 2]]


def test_a_request_that_fails_while_read_does_not_hold_the_batch():
    calls: list[list[int]] = []

    async def main() -> None:
        batcher = Batcher(recording(calls), max_batch=8, max_wait=HOUR, max_queue=8)
        batcher.start()
        refused = asyncio.Event()

        async def bad_request() -> None:
            with batcher.expecting():
                await refused.wait()
                raise ValueError("not an image")

        bad = asyncio.ensure_future(bad_request())
        await loop_turns()
        first = asyncio.ensure_future(batcher.submit([1]))
        await loop_turns()
        assert batcher.queued == 1
        refused.set()
        assert await asyncio.wait_for(first, 60) == [10]
        with pytest.raises(ValueError):
            await bad
        await batcher.stop()

    asyncio.run(main())
    assert calls == [[1]]


def test_max_wait_bounds_the_wait_for_a_request_being_read():
    calls: list[list[int]] = []

    async def main() -> None:
        batcher = Batcher(recording(calls), max_batch=8, max_wait=0.01, max_queue=8)
        batcher.start()
        never = asyncio.Event()

        async def stuck_request() -> None:
            with batcher.expecting():  # a client that stopped sending halfway
                await never.wait()

        stuck = asyncio.ensure_future(stuck_request())
        assert await asyncio.wait_for(batcher.submit([1]), 60) == [10]
        stuck.cancel()
        await batcher.stop()

    asyncio.run(main())
    assert calls == [[1]]


def test_timings_give_the_wait_for_the_busy_pass_and_the_own_pass():
    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        if items == [0]:
            release.wait(30)  # busy until the test has slept
        else:
            threading.Event().wait(0.02)  # the second pass takes 20 ms
        return items

    async def main() -> tuple[dict, dict]:
        batcher = Batcher(run, max_batch=8, max_wait=HOUR, max_queue=8)
        batcher.start()
        first_timings: dict[str, float] = {}
        second_timings: dict[str, float] = {}
        first = asyncio.ensure_future(batcher.submit([0], first_timings))
        await loop_turns()
        second = asyncio.ensure_future(batcher.submit([1], second_timings))
        await loop_turns()
        await asyncio.sleep(0.05)  # the second image waits through this
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 60)
        await batcher.stop()
        return first_timings, second_timings

    first, second = asyncio.run(main())
    assert set(first) == set(second) == {"queue", "forward"}
    assert first["forward"] >= 0.05  # held until released
    assert second["queue"] >= 0.05 and second["forward"] >= 0.02
    assert first["queue"] >= 0


def test_a_coroutine_run_is_awaited_on_the_event_loop_in_batches():
    # the network in its own process: the batcher awaits its answer, with no thread
    threads: set[int] = set()
    calls: list[list[int]] = []
    running: list[int] = []

    async def run(items: list[int]) -> list[int]:
        threads.add(threading.get_ident())
        calls.append(list(items))
        running.append(batcher.running)
        await asyncio.sleep(0)
        return [x + 100 for x in items]

    async def main() -> list[list[int]]:
        nonlocal batcher
        batcher = Batcher(run, max_batch=8, max_wait=0.2, max_queue=64)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([i]) for i in range(4)))
        await batcher.stop()
        return answers

    batcher: Batcher | None = None
    assert asyncio.run(main()) == [[100], [101], [102], [103]]
    assert calls == [[0, 1, 2, 3]] and running == [4] and batcher.running == 0
    assert threads == {threading.get_ident()}


def test_stop_waits_for_the_batch_running_and_no_longer_than_told():
    release = threading.Event()
    answered: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        release.wait(30)
        return items

    async def main(seconds: float) -> bool:
        batcher = Batcher(run, max_batch=8, max_wait=0, max_queue=8)
        batcher.start()
        pending = asyncio.ensure_future(batcher.submit([7]))
        while not batcher.running:
            await asyncio.sleep(0.001)
        stopping = asyncio.ensure_future(batcher.stop(seconds))
        await asyncio.sleep(0.05)
        stopped_early = stopping.done()
        release.set()  # the network answers: the drain ends with its answer given
        await stopping
        if pending.done() and not pending.cancelled():
            answered.append(pending.result())
        return stopped_early

    assert asyncio.run(main(30)) is False and answered == [[7]]

    async def never(items: list[int]) -> list[int]:  # a network process that hangs
        await asyncio.Event().wait()
        return items

    async def hung() -> bool:
        batcher = Batcher(never, max_batch=8, max_wait=0, max_queue=8)
        batcher.start()
        pending = asyncio.ensure_future(batcher.submit([8]))
        while not batcher.running:
            await asyncio.sleep(0.001)
        await asyncio.wait_for(batcher.stop(0.1), 30)  # unbounded, it would never return
        return pending.done()

    assert asyncio.run(hung()) is False  # its request is left to the server's own timeout
