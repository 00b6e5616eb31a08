"""Paths and helpers every test package shares: the repository, the bundled configs,
running `python -m cnnzoo` as a real process, writing files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Result:
    code: int
    out: str
    err: str


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


# A tiny batchnorm CNN on 28x28x1 images and its SGD training, without the last train
# key: the tests of a training option append theirs ("  ema: {decay: 0.9}\n").
TINY_BN_RUN = """
model:
  layers:
    - input: {width: 28, height: 28, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: same}
    - batchnorm
    - relu
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1, augment: {flip: true}}
train:
  epochs: 2
  batch_size: 24
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_summary_refuses(cli, tmp_path: Path, depth: int, layers: str, message: str,
                           fix: str | None) -> None:
    """`cnnzoo summary` on an 8x8xDEPTH input, then LAYERS (YAML list items), then fc 10:
    exit code 2 and one line holding MESSAGE (and FIX), no traceback."""
    body = "\n".join("    " + line for line in layers.splitlines())
    path = write(tmp_path / "bad.yaml", "model:\n  layers:\n    - input: {width: 8, height: 8, "
                 f"depth: {depth}}}\n{body}\n    - fc: 10\n")
    result = cli("summary", "--config", path)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert message in lines[0]
    if fix is not None:
        assert fix in lines[0]
