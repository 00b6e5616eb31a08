"""The tiny run every reliability test trains, and the checks they share.

The trainings are tiny (a 4-filter conv on 240 fake MNIST images, 9 steps an
epoch) with dropout, augmentation and a warm-up cosine schedule switched on, so
that every source of randomness has to be restored for a resumed run to match.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.runs.checkpoint import load_weights
from cnnzoo.training.trainer import fit

TINY = """
model:
  layers:
    - conv: {filters: 4, kernel: 3, padding: same, activation: relu}
    - pool: 4
    - dropout: 0.2
    - fc: 10
data:
  dataset: fashion_mnist
  val_split: 0.1
  augment: {crop: 2, flip: true, erase: 0.5}
train:
  epochs: 3
  batch_size: 24
  optimizer: {name: sgd, lr: 0.05}
  scheduler: {name: cosine, warmup_epochs: 0.5}
"""
STEPS_PER_EPOCH = 9  # 240 images, 10% held out: 216 / 24
TOTAL_STEPS = 3 * STEPS_PER_EPOCH
USER_ERROR = 2

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(config: cnnzoo.ExperimentConfig, data_root: Path, **kwargs) -> Path:
    """`fit` without pictures (they do not change training and cost time)."""
    kwargs.setdefault("callbacks", [])
    return fit(config, data_root=str(data_root), show_progress=False, **kwargs).run_dir



def weights_of(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "model.safetensors")[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def assert_same_training(run: Path, reference: Path) -> None:
    """Bitwise the same weights, the same steps (loss and lr of every step), the same
    metrics but for the timings, and the same test result."""
    assert_same_weights(run, reference)
    assert (run / "steps.csv").read_text() == (reference / "steps.csv").read_text()
    timeless = [
        [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
         for row in cnnzoo.runs.rundir.read_metrics(r)] for r in (run, reference)
    ]
    assert timeless[0] == timeless[1]
    results = [json.loads((r / "results.json").read_text()) for r in (run, reference)]
    assert results[0]["test_loss"] == results[1]["test_loss"]
    assert results[0]["steps"] == results[1]["steps"] == TOTAL_STEPS


def step_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "steps.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("model.safetensors", "state.pt")}


@contextlib.contextmanager
def memory_guard(extra: int = 2 * 2**30):
    """Cap this process's address space at its current size plus `extra`, so that a
    regression that allocates gigabytes fails with MemoryError instead of exhausting the
    machine."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


class RunsCode:
    """A pickle payload: unpickling it calls `func(arg)`."""

    def __init__(self, func, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def flip_bit(data: bytes, index: int, bit: int) -> bytes:
    """`data` with bit `bit` of byte `index` flipped."""
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)
