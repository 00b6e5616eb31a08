"""Shared test helpers: running the CLI in-process and as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `cnnzoo ARGS...` in this process; returns exit code, stdout, stderr."""
    from cnnzoo.cli.app import run

    def invoke(*args: str | Path) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def run_process(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300,
                cwd: Path | None = None) -> Result:
    """Run `python -m cnnzoo ARGS...` as its own process (real exit codes and signals)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cnnzoo", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def slow_cases(values, *slow) -> list:
    """Parameters for pytest.mark.parametrize, those in `slow` marked slow: the
    quick set (-m "not slow") keeps the cheap cases of a test, the full suite runs all."""
    return [pytest.param(v, marks=pytest.mark.slow) if v in slow else v for v in values]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
