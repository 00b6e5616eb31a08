"""`cnnzoo serve` through real HTTP on 127.0.0.1, the server in a process of its own:
the answers are the CLI's, a lone request runs at once and waiting requests share
forward passes, a full queue answers 503, bad input 4xx with the server still serving,
SIGTERM drains."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from cnnzoo.serve.timing import server_timing
from tests.helpers.datafiles import pixel_bomb_png
from tests.helpers.predicting import assert_same_answers, write_pngs

pytestmark = pytest.mark.slow  # every test starts a server process


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def private_cache(cache, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(cache))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_pngs(tmp_path_factory.mktemp("images"), 8, seed=4)


class Server:
    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, dict, object]:
        """(status, headers, decoded JSON body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            received = {key.lower(): value for key, value in response.getheaders()}
            return response.status, received, json.loads(data)
        finally:
            connection.close()

    def predict(self, data: bytes, content_type: str = "image/png") -> tuple[int, dict, object]:
        return self.request("POST", "/predict", data, content_type)

    def upload(self, path: str, files: list[tuple[str, bytes]]) -> tuple[int, dict, object]:
        body, content_type = multipart(files)
        return self.request("POST", path, body, content_type)

    def counters(self) -> dict:
        return self.request("GET", "/metadata")[2]["counters"]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part per (name, bytes)."""
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
              f'filename="{name}"\r\nContent-Type: image/png\r\n\r\n').encode() + data + b"\r\n"
             for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}")


class HalfSent:
    """A POST /predict whose headers and first half of the body are sent: the server is
    reading it until `finish` sends the rest."""

    def __init__(self, port: int, body: bytes) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.connection.putrequest("POST", "/predict")
        self.connection.putheader("Content-Type", "image/png")
        self.connection.putheader("Content-Length", str(len(body)))
        self.connection.endheaders(body[: len(body) // 2])
        self.rest = body[len(body) // 2:]

    def finish(self) -> tuple[int, dict, object]:
        try:
            self.connection.send(self.rest)
            response = self.connection.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), json.loads(data)
        finally:
            self.connection.close()


def wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(*options: str, name: str = "lenet5"):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "serve", name, "--pretrained", "--port", str(port),
         *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ})
    server = Server(process, port)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if server.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_answers_labels_and_metadata_are_the_clis(images, cli):
    reference = json.loads(cli("predict", "lenet5", "--pretrained", *images, "--json").out)
    with serving() as server:
        raw = [server.predict(p.read_bytes()) for p in images[:3]]
        form = [server.upload("/predict", [(p.name, p.read_bytes())]) for p in images[3:5]]
        batch = server.upload("/predict/batch", [(p.name, p.read_bytes()) for p in images])
        labels = server.request("GET", "/labels")
        metadata = server.request("GET", "/metadata")[2]
    assert all(status == 200 for status, _, _ in [*raw, *form, batch, labels])
    # each answer says how long the server itself spent on it, a prediction by part
    timings = [server_timing(headers["server-timing"]) for _, headers, _ in [*raw, *form, batch]]
    for timing in timings:
        assert list(timing) == ["read", "queue", "forward", "app"]
        assert 0 < timing["read"] + timing["queue"] + timing["forward"] <= timing["app"]
    assert list(server_timing(labels[1]["server-timing"])) == ["app"]
    assert_same_answers([body for _, _, body in raw + form], reference[:5])
    assert_same_answers(batch[2], reference)
    assert [item["image"] for item in batch[2]] == [p.name for p in images]
    assert form[0][2]["image"] == images[3].name
    from cnnzoo.tools.predict.predictor import Predictor

    run = Predictor("lenet5", pretrained=True).run
    assert labels[2] == {"classes": run.classes}
    digest = hashlib.sha256((run.path / "model.safetensors").read_bytes()).hexdigest()
    assert metadata["weights_sha256"] == digest
    assert metadata["name"] == "lenet5" and metadata["params"] == 61706
    assert metadata["runs_as"] == "one call"  # traced and frozen: one GIL release a batch
    assert metadata["input"] == {"width": 28, "height": 28, "depth": 1}
    assert metadata["normalization"]["mean"] == run.info["mean"]


def test_a_lone_request_runs_at_once_and_a_crowd_shares_one_forward_pass(images):
    # --max-wait-ms is only an upper bound: an idle network does not wait for company
    # (the client would time out if it did), it waits for requests still being read.
    with serving("--max-wait-ms", "60000", "--max-batch", "64") as server:
        assert server.predict(images[0].read_bytes())[0] == 200
        before = server.counters()
        slow = HalfSent(server.port, images[0].read_bytes())
        wait_until(lambda: server.counters()["requests"] > before["requests"])
        with ThreadPoolExecutor(16) as pool:
            crowd = [pool.submit(server.predict, images[i % 8].read_bytes()) for i in range(16)]
            wait_until(lambda: server.counters()["queued"] == 16)
            answers = [slow.finish(), *[f.result(timeout=60) for f in crowd]]
        after = server.counters()
    assert [status for status, _, _ in answers] == [200] * 17
    assert after["images"] - before["images"] == 17
    assert after["forward_passes"] - before["forward_passes"] == 1
    assert answers[1][2]["top"] == answers[9][2]["top"]  # the same image, the same answer


def test_a_full_queue_answers_503_with_retry_after(images):
    with serving("--max-queue", "2", "--max-batch", "1", "--max-wait-ms", "0") as server:
        files = [(p.name, p.read_bytes()) for p in images[:3]]
        status, headers, body = server.upload("/predict/batch", files)
        assert status == 503 and headers["retry-after"] == "1" and "busy" in body["error"]
        with ThreadPoolExecutor(32) as pool:
            burst = list(pool.map(lambda i: server.predict(images[i % 8].read_bytes()),
                                  range(64)))
        assert {status for status, _, _ in burst} <= {200, 503}
        refused = [h for status, h, _ in burst if status == 503]
        assert all(h["retry-after"] == "1" for h in refused)
        assert server.counters()["rejected"] == 3 + len(refused)
        assert server.upload("/predict/batch", files[:2])[0] == 200


BAD_INPUTS = {
    "not an image": (b"hello, world", "image/png", 400, "not an image format"),
    "truncated": (None, "image/png", 400, "cannot read image request body"),
    "decompression bomb": (pixel_bomb_png(100_000, 100_000), "image/png", 400,
                           "decompression bomb"),
    "wrong content type": (b"{}", "application/json", 415, "Content-Type image/*"),
    "over the size cap": (b"\x89PNG" + bytes(5000), "image/png", 413, "over the limit"),
    "empty": (b"", "application/octet-stream", 400, "empty"),
}


def test_each_bad_input_is_a_4xx_and_the_next_request_is_answered(images):
    good = images[0].read_bytes()
    truncated = good[: len(good) // 2]
    with serving("--max-bytes", "4000") as server:
        for name, (data, content_type, status, words) in BAD_INPUTS.items():
            answer = server.predict(truncated if data is None else data, content_type)
            assert answer[0] == status, (name, answer)
            assert words in answer[2]["error"], (name, answer)
            assert server_timing(answer[1]["server-timing"])["app"] > 0, name
            assert server.predict(good)[0] == 200, name
        assert server.upload("/predict/batch", [])[0] == 400
        assert server.upload("/predict", [("big.png", bytes(5000))])[0] == 413
        assert streamed(server.port, [bytes(1500)] * 4)[0] == 413  # no Content-Length
        assert server.predict(good)[0] == 200
        assert server.predict(good, "multipart/form-data; boundary=x")[0] == 400
        assert server.request("POST", "/predict/batch", good, "image/png")[0] == 415
        assert server.request("GET", "/predict")[0] == 405
        missing = server.request("GET", "/nowhere")
        assert missing[0] == 404 and missing[2] == {"error": "Not Found"}
        mixed = server.upload("/predict/batch", [("a.png", good), ("b.png", b"junk")])
        assert mixed[0] == 200 and "top" in mixed[2][0] and "error" in mixed[2][1]
        assert server.process.poll() is None


def streamed(port: int, chunks: list[bytes]) -> tuple[int, dict]:
    """POST /predict with a chunked body, which declares no length up front."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/predict", body=iter(chunks), encode_chunked=True,
                           headers={"Content-Type": "image/png"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_sigterm_answers_the_requests_in_flight_then_exits_0(images):
    # In flight: one request whose body is still arriving, and three read in full that
    # wait (up to --max-wait-ms) to share its forward pass.
    with serving("--max-wait-ms", "60000") as server, ThreadPoolExecutor(3) as pool:
        slow = HalfSent(server.port, images[0].read_bytes())
        wait_until(lambda: server.counters()["requests"] == 1)
        queued = [pool.submit(server.predict, p.read_bytes()) for p in images[1:4]]
        wait_until(lambda: server.counters()["queued"] == 3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # it has stopped accepting connections, not answering these
        assert not any(f.done() for f in queued)
        answers = [slow.finish(), *[f.result(timeout=60) for f in queued]]
        assert server.process.wait(60) == 0, server.process.stdout.read()
    assert all(status == 200 and body["top"] for status, _, body in answers)


def test_two_workers_serve_on_one_port_and_stop_on_sigterm(images):
    with serving("--workers", "2") as server:
        assert server.predict(images[0].read_bytes())[0] == 200
        networks = {server.request("GET", "/metadata")[2]["serving"]["network_pid"]
                    for _ in range(8)}  # one or both workers answer
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0, server.process.stdout.read()
    wait_until(lambda: not any(_alive(pid) for pid in networks), 30)


def _alive(pid: int) -> bool:
    """Whether any thread of `pid` runs. A killed process's first thread can be a zombie
    while its others still exit; until the last has, its parent cannot reap it."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:  # that thread has gone meanwhile
            continue
        if state not in ("Z", "X"):
            return True
    return False


def test_the_network_runs_in_a_process_of_its_own_that_ends_with_the_server(images):
    with serving() as server:
        info = server.request("GET", "/metadata")[2]["serving"]
        pid = info["network_pid"]
        assert info["network"] == "process" and info["network_starts"] == 1
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert pid != server.process.pid and int(stat[1]) == server.process.pid  # its child
        server.process.kill()  # no drain at all: the socket closes with the process
        server.process.wait(30)
        wait_until(lambda: not _alive(pid), 30)


def test_a_network_process_that_ends_fails_its_batch_with_503_and_starts_again(images):
    with serving("--max-wait-ms", "0") as server, ThreadPoolExecutor(1) as pool:
        pid = server.request("GET", "/metadata")[2]["serving"]["network_pid"]
        os.kill(pid, signal.SIGSTOP)  # it holds the next batch, unanswered
        pending = pool.submit(server.predict, images[0].read_bytes())
        wait_until(lambda: server.counters()["running"] == 1)
        os.kill(pid, signal.SIGKILL)
        status, headers, body = pending.result(timeout=60)
        assert status == 503 and headers["retry-after"] == "1"
        assert "the network's process ended (exit code -9) during this batch" in body["error"]
        assert server.predict(images[1].read_bytes())[0] == 200
        info = server.request("GET", "/metadata")[2]["serving"]
        assert info["network_starts"] == 2 and info["network_pid"] != pid
        os.kill(info["network_pid"], signal.SIGKILL)  # ended while idle: /health restarts it
        wait_until(lambda: not _alive(info["network_pid"]))
        assert server.request("GET", "/health")[0] == 200
        after = server.request("GET", "/metadata")[2]["serving"]
        assert after["network_starts"] == 3 and after["network_pid"] != info["network_pid"], (
            [(i["network_pid"], i["network_starts"]) for i in (info, after)])


def test_a_network_process_whose_server_died_mid_batch_ends_without_a_traceback(images):
    with serving() as server, ThreadPoolExecutor(1) as pool:
        pid = server.request("GET", "/metadata")[2]["serving"]["network_pid"]
        os.kill(pid, signal.SIGSTOP)
        pool.submit(server.predict, images[0].read_bytes())
        wait_until(lambda: server.counters()["running"] == 1)
        server.process.kill()
        server.process.wait(30)
        os.kill(pid, signal.SIGCONT)  # it answers a batch no one reads any more
        wait_until(lambda: not _alive(pid), 30)
        output = server.process.stdout.read()  # the network's process writes here too
    assert "Traceback" not in output, output


def test_with_network_thread_the_server_runs_the_network_itself(images, cli):
    reference = json.loads(cli("predict", "lenet5", "--pretrained", *images[:2], "--json").out)
    with serving("--network", "thread") as server:
        answers = [server.predict(p.read_bytes())[2] for p in images[:2]]
        metadata = server.request("GET", "/metadata")[2]
    assert_same_answers(answers, reference)
    assert metadata["serving"]["network_pid"] == server.process.pid
    assert metadata["runs_as"] == "one call"
