"""The server's network in a process of its own: its answers are the Predictor's, a batch
it fails on is that batch's error and the next is answered, a process that ends during a
batch fails it and starts again, one that cannot load says why, and only closing its
socket ends it (not SIGINT or SIGTERM, which the server's drain handles)."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest

from cnnzoo.errors import CnnzooError
from cnnzoo.serve.network import NetworkDown, NetworkFailed, NetworkProcess, load_predictor
from cnnzoo.serve.options import NETWORK_PLACES, ServeOptions
from cnnzoo.tools.predict.predictor import Predictor

pytestmark = pytest.mark.slow  # each test starts a network process (torch's import, ~2 s)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _items(predictor: Predictor, count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    volume = predictor.volume
    rng = np.random.default_rng(seed)
    return [(f"image {i}", rng.integers(0, 256, (volume.depth, volume.height, volume.width),
                                        dtype=np.uint8)) for i in range(count)]


def _started(name: str, **options) -> NetworkProcess:
    served = ServeOptions(name, pretrained=True, device="cpu", **options)
    network = NetworkProcess(served, load_predictor(served))
    network.start()
    return network


@pytest.mark.parametrize(("name", "kind"), [("lenet5", "probability"),
                                            ("capsnet-small", "score")])
def test_the_answers_are_the_predictors_in_this_process(name, kind):
    network = _started(name, top=4)
    reference = Predictor(name, pretrained=True, device="cpu", top=4)
    items = _items(reference, 9)

    async def answers() -> list:
        try:
            return [await network.answer(items[:1]), await network.answer(items)]
        finally:
            assert await network.aclose() == 0

    one, nine = asyncio.run(answers())
    want = reference.answer([n for n, _ in items], [p for _, p in items], [None] * 9)
    assert network.runs_as == "one call" and network.pid != os.getpid()
    for got, expected in zip([*one, *nine], [want[0], *want], strict=True):
        assert got.image == expected.image and got.kind == expected.kind == kind
        assert [g.index for g in got.top] == [g.index for g in expected.top]
        assert [g.name for g in got.top] == [reference.classes[g.index] for g in expected.top]
        assert [g.value for g in got.top] == pytest.approx([g.value for g in expected.top],
                                                           abs=1e-5)


def test_a_batch_the_network_fails_on_is_its_error_and_the_next_is_answered():
    network = _started("lenet5")
    items = _items(network.predictor, 2)

    async def run() -> list:
        try:
            with pytest.raises(NetworkFailed, match="failed on this batch: RuntimeError"):
                await network._exchange(np.zeros((2, 3, 5, 5), np.uint8))  # not 1 x 28 x 28
            return await network.answer(items)
        finally:
            await network.aclose()

    answers = asyncio.run(run())
    assert [a.ok for a in answers] == [True, True] and network.starts == 1


def test_a_process_that_ends_during_a_batch_fails_it_and_starts_again():
    network = _started("lenet5")
    items = _items(network.predictor, 3)
    first = network.pid

    async def run() -> list:
        try:
            os.kill(first, signal.SIGSTOP)  # it holds the batch, unanswered
            pending = asyncio.ensure_future(network.answer(items))
            await asyncio.sleep(0.2)
            assert not pending.done()
            os.kill(first, signal.SIGKILL)
            with pytest.raises(NetworkDown, match=r"ended \(exit code -9\) during this batch"):
                await pending
            return await network.answer(items)
        finally:
            await network.aclose()

    answers = asyncio.run(run())
    assert all(a.ok for a in answers)
    assert network.starts == 2 and network.pid != first


def test_a_network_that_cannot_load_says_why(tmp_path):
    served = ServeOptions(str(tmp_path / "nowhere"))
    network = NetworkProcess(served, Predictor("lenet5", pretrained=True, device="cpu"))
    with pytest.raises(CnnzooError, match="nowhere") as raised:
        network.start()
    assert "Traceback" not in str(raised.value)
    assert network.process is not None and network.process.returncode == 2


def test_only_closing_its_socket_ends_the_network_process():
    network = _started("lenet5")
    items = _items(network.predictor, 1)

    async def run() -> list:
        assert network.pid is not None
        os.kill(network.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        os.kill(network.pid, signal.SIGTERM)
        await asyncio.sleep(0.2)
        answers = await network.answer(items)
        assert await network.aclose() == 0
        return answers

    assert asyncio.run(run())[0].ok and network.starts == 1


def test_the_options_and_the_cli_name_the_same_places():
    from cnnzoo.cli.serve import NetworkPlace

    assert [place.value for place in NetworkPlace] == list(NETWORK_PLACES)
    with pytest.raises(CnnzooError, match="Received: network='gpu'"):
        ServeOptions("lenet5", network="gpu")


def test_a_network_that_cannot_start_again_refuses_batches_for_a_while(tmp_path):
    network = _started("lenet5")
    items = _items(network.predictor, 1)
    first = network.pid
    network.options = ServeOptions(str(tmp_path / "gone"))  # its run has been deleted

    async def run() -> list[str]:
        said = []
        os.kill(first, signal.SIGKILL)
        network.process.wait(30)  # ended while idle: the next batch starts it again
        for _ in range(2):
            with pytest.raises(NetworkDown, match=r"cannot start: .*gone") as raised:
                await network.answer(items)
            said.append(str(raised.value))
        assert not network.up
        from cnnzoo.serve.app import _health

        health = await _health(network)  # a supervisor sees it down, and for how long
        assert health.status_code == 503 and health.headers["retry-after"] == "1"
        await network.aclose()
        return said

    said = asyncio.run(run())
    assert said[0] == said[1]
    # the second batch did not start a process: it was refused within RETRY_SECONDS
    assert network.starts == 1 and network.pid != first
    assert network.process is not None and network.process.returncode == 2


@pytest.mark.parametrize(("error", "status"), [(NetworkFailed("boom"), 500),
                                               (NetworkDown("gone"), 503)])
def test_the_networks_failures_are_the_requests_json_errors(error, status):
    from cnnzoo.serve.app import Refused, _submit
    from cnnzoo.serve.batcher import Batcher

    async def run(items: list) -> list:
        raise error

    async def main() -> None:
        batcher = Batcher(run, max_batch=4, max_wait=0, max_queue=4)
        batcher.start()
        try:
            with pytest.raises(Refused) as raised:
                await _submit(batcher, [("x", np.zeros((1, 28, 28), np.uint8))])
            assert raised.value.status == status and str(error) in str(raised.value)
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_a_worker_whose_network_cannot_start_writes_why_and_exits_3(tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    from cnnzoo.serve import server

    failures = tmp_path / "failures"
    failures.touch()
    monkeypatch.setenv(server.OPTIONS_VARIABLE,
                       json.dumps(asdict(ServeOptions(str(tmp_path / "nowhere")))))
    monkeypatch.setenv(server.FAILURE_VARIABLE, str(failures))
    with pytest.raises(SystemExit) as exited:
        server.app_from_environment()
    assert exited.value.code == 3  # uvicorn's supervisor then stops every worker
    assert "nowhere" in failures.read_text()


def test_serve_says_why_a_worker_could_not_start_and_fails(monkeypatch):
    import uvicorn

    from cnnzoo.serve import server

    def workers_one_of_which_fails(*args, **kwargs) -> None:  # as uvicorn's supervisor
        with open(os.environ[server.FAILURE_VARIABLE], "a") as failures:
            failures.write("CUDA out of memory\n")

    for variable in (server.OPTIONS_VARIABLE, server.FAILURE_VARIABLE):
        monkeypatch.setenv(variable, "")  # run_workers sets them; restored after the test
    monkeypatch.setattr(uvicorn, "run", workers_one_of_which_fails)
    with pytest.raises(CnnzooError, match="a worker could not start: CUDA out of memory"):
        server.run_workers(ServeOptions("lenet5"), 2, {})
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    server.run_workers(ServeOptions("lenet5"), 2, {})  # none failed: it returns
