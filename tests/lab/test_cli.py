"""`cnnzoo lab` on the command line: what it refuses before it listens, the token it
makes off loopback, and Ctrl-C as its normal end."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def test_a_taken_port_is_one_line(cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("lab", "--runs", tmp_path, "--port", port, "--no-browser")
    assert result.code == 2
    assert result.err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


def test_runs_that_is_a_file_is_refused(cli, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = cli("lab", "--runs", tmp_path / "file", "--no-browser")
    assert result.code == 2 and "is a file" in result.err


@pytest.mark.slow
def test_off_loopback_it_prints_a_token_and_ctrl_c_ends_it(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "lab", "--host", "0.0.0.0", "--port", str(port),
         "--runs", str(tmp_path), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert re.search(rf"http://0\.0\.0\.0:{port}/\?token=[0-9a-f]{{48}}", line), line
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 0
    assert "Traceback" not in process.stdout.read()
