"""A tiny conv net on fake Fashion-MNIST files: what the untrusted-input suites throw bad
input at."""

from __future__ import annotations

from pathlib import Path

import cnnzoo
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

USER_ERROR = 2


def small_config(val_split: float = 0, epochs: int = 1) -> str:
    return f"""
model:
  layers:
    - conv: {{filters: 4, kernel: 3, activation: relu}}
    - pool: 2
    - fc: 10
data: {{dataset: fashion_mnist, val_split: {val_split}}}
train: {{epochs: {epochs}, batch_size: 50, optimizer: {{name: sgd, lr: 0.05}}}}
"""


def small_workspace(work: Path, *, val_split: float = 0, epochs: int = 1,
                    train: bool = False) -> Path:
    """WORK/data (200 training and 50 test images), WORK/small.yaml and, with `train`,
    WORK/run trained from them."""
    from cnnzoo.training.trainer import fit

    write_mnist(work / "data", n_train=200, n_test=50)
    path = write(work / "small.yaml", small_config(val_split, epochs))
    if train:
        fit(cnnzoo.load_config(path), out=work / "run", data_root=str(work / "data"),
            show_progress=False, callbacks=[])
    return work
