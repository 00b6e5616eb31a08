"""Untrusted input, round three, for weights named by URL: a server that accepts the
connection and never answers is given up after the timeout, with one message and exit
code 2, by every command that downloads; SIGTERM during a download ends it with a
message and exit code 143; neither leaves anything in the cache."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.common import ROOT

USER_ERROR = 2
SIGTERM_EXIT = 128 + signal.SIGTERM


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)  # held open, unanswered
            self.accepted.set()

    def url(self, name: str = "x.safetensors") -> str:
        return f"http://127.0.0.1:{self.port}/{name}#sha256={'ab' * 32}"

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def _left_in(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


@pytest.mark.parametrize("command", ["eval", "predict", "viz", "export", "init-from"])
def test_a_server_that_never_answers_is_given_up(tmp_path, cli, monkeypatch, silent,
                                                 command):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNZOO_DOWNLOAD_TIMEOUT", "0.5")
    url = silent.url()
    image = tmp_path / "x.png"
    args = {
        "eval": ["eval", url, "--pretrained"],
        "predict": ["predict", url, image, "--pretrained"],
        "viz": ["viz", url, "-i", image, "--pretrained", "-o", tmp_path / "v.png"],
        "export": ["export", url, "--pretrained", "-f", "onnx", "-o", tmp_path / "m.onnx"],
        "init-from": ["train", "-c", "lenet5", "--init-from", url, "--out", tmp_path / "run"],
    }[command]
    tick = time.monotonic()
    result = cli(*args)
    assert result.code == USER_ERROR, result.err
    assert silent.accepted.is_set()
    assert result.err == (f"error: cannot download {url.split('#')[0]}: no answer within 0.5 s; "
                          "check the address and the network, or wait longer with "
                          "CNNZOO_DOWNLOAD_TIMEOUT=SECONDS\n")
    assert time.monotonic() - tick < 60  # not a hang (the bound is loose: a loaded machine)
    assert _left_in(tmp_path / "cache") == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(tmp_path, cli, monkeypatch,
                                                              value):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNZOO_DOWNLOAD_TIMEOUT", value)
    result = cli("eval", f"https://example.invalid/w.safetensors#sha256={'0' * 64}",
                 "--pretrained")
    assert result.code == USER_ERROR
    assert result.err.startswith(f"error: CNNZOO_DOWNLOAD_TIMEOUT={value!r} is not a number "
                                 "of seconds above 0")
    assert not (tmp_path / "cache").exists()


def test_a_cache_that_cannot_be_written_is_one_message(cli, monkeypatch, silent):
    monkeypatch.setenv("CNNZOO_CACHE", "/proc/cnnzoo-cache")
    result = cli("eval", silent.url(), "--pretrained")
    assert result.code == USER_ERROR and result.err.count("\n") == 1
    assert "CNNZOO_CACHE /proc/cnnzoo-cache/downloads cannot be written" in result.err
    assert not silent.accepted.is_set()  # refused before connecting


@pytest.mark.slow
def test_sigterm_during_a_download_leaves_nothing(tmp_path, silent):
    cache = tmp_path / "cache"
    env = {**os.environ, "CNNZOO_CACHE": str(cache), "CNNZOO_DOWNLOAD_TIMEOUT": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnzoo", "eval", silent.url(),
                             "--pretrained"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert silent.accepted.wait(120), "the download never connected"
        assert [p.suffix for p in (cache / "downloads").iterdir()] == [".partial"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == SIGTERM_EXIT, err
    assert err == (f"SIGTERM: the download of {silent.url().split('#')[0]} stopped; nothing "
                   "was kept in the cache\n")
    assert _left_in(cache) == []


def _kmnist(tmp_path: Path) -> tuple[Path, Path]:
    """An experiment on KMNIST (not installed here, so downloaded) and an empty data root."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "k.yaml"
    config.write_text("model:\n  layers:\n    - fc: 10\ndata: {dataset: kmnist}\n"
                      "train: {epochs: 1}\n")
    return config, data


def test_a_dataset_mirror_that_never_answers_is_given_up(tmp_path, cli, monkeypatch, silent):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.KMNIST, "mirrors",
                        [f"http://127.0.0.1:{silent.port}/kmnist/"])
    monkeypatch.setenv("CNNZOO_DOWNLOAD_TIMEOUT", "0.5")
    config, data = _kmnist(tmp_path)
    result = cli("train", "-c", config, "--data-root", data, "--out", tmp_path / "run")
    assert result.code == USER_ERROR and result.err.count("\n") == 1
    assert silent.accepted.is_set()
    assert "dataset kmnist not found; the download failed (" in result.err
    assert "timed out" in result.err and "CNNZOO_DOWNLOAD_TIMEOUT=SECONDS" in result.err
    assert _left_in(data) == [] and list(data.iterdir()) == []
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigterm_during_a_dataset_download_leaves_nothing(tmp_path, silent):
    config, data = _kmnist(tmp_path)
    mirror = f"http://127.0.0.1:{silent.port}/kmnist/"
    start = ("import sys, torchvision.datasets as d; d.KMNIST.mirrors = [sys.argv[1]]; "
             "from cnnzoo.cli.app import run; sys.exit(run(sys.argv[2:]))")
    proc = subprocess.Popen([sys.executable, "-c", start, mirror, "train", "-c", str(config),
                             "--data-root", str(data), "--out", str(tmp_path / "run")],
                            env={**os.environ, "CNNZOO_DOWNLOAD_TIMEOUT": "120"}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert silent.accepted.wait(120), "the download never connected"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == SIGTERM_EXIT, err
    assert err == f"SIGTERM: the download of kmnist stopped; nothing was kept in {data}\n"
    assert list(data.iterdir()) == [] and not (tmp_path / "run").exists()
