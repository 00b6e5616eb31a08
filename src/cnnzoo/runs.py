"""The run directory: everything one training run leaves behind.

    config.yaml        the fully resolved experiment, with the versions that ran it
    run.json           dataset, class names, normalisation, input volume, command
    summary.txt        the layer table
    model.safetensors  the weights (verified by a SHA-256 in the header)
    state.pt           optimizer, scheduler, RNG and position, for --resume
    metrics.csv        per epoch and split: loss, accuracy, lr, seconds, images/s
    steps.csv          per step: loss and learning rate
    results.json       test accuracy and loss, time, params, mult-adds, device
    train.lock         the id of the process training into it, locked while it lives
                       (cnnzoo.runlock)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.config import ExperimentConfig, load_config
from cnnzoo.errors import CheckpointError, CnnzooError, ConfigError
from cnnzoo.files import atomic_write_text
from cnnzoo.runlock import RunLock, claim_new_run_dir, lock_run, refuse_live

CONFIG = "config.yaml"
RUN = "run.json"
SUMMARY = "summary.txt"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
METRICS = "metrics.csv"
STEPS = "steps.csv"
RESULTS = "results.json"

METRIC_FIELDS = ["epoch", "split", "loss", "accuracy", "lr", "seconds", "images_per_s"]
STEP_FIELDS = ["step", "epoch", "batch", "loss", "lr"]


def versions() -> dict[str, str]:
    import torch

    from cnnzoo import __version__

    return {
        "cnnzoo": __version__,
        "torch": str(torch.__version__),
        "torchvision": _torchvision_version(),
        "python": sys.version.split()[0],
    }


def _torchvision_version() -> str:
    """torchvision's version without importing it: its import pulls in torch's compiler
    stack and takes seconds that a run on an idx or CIFAR file never needs."""
    import importlib.metadata

    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        import torchvision

        return str(torchvision.__version__)


def default_run_dir(name: str, base: Path = Path("runs")) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{name}-{stamp}-{n}"
    return path


def holds_run(path: Path) -> bool:
    return (path / CONFIG).exists()


def check_new_run_dir(path: Path) -> None:
    """Refuse an --out that is a file, is being trained into or already holds a run,
    before any work starts (`claim_run_dir` checks again, atomically)."""
    if path.exists() and not path.is_dir():
        raise CnnzooError(f"--out {path} is a file; give a directory for the run")
    if path.is_dir():
        refuse_live(path, "train into")
    if holds_run(path):
        raise CnnzooError(
            f"--out {path} already holds a run; continue it with `cnnzoo train --resume {path}` "
            "or choose another --out"
        )


def claim_run_dir(path: Path, *, restarted: bool = False) -> RunLock:
    """Create and lock a new run directory for this process (rank 0), or stop. A worker
    that torchrun restarted before the first checkpoint takes its run over as it is."""
    if restarted:
        return lock_run(path)
    return claim_new_run_dir(path, holds_run)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is {path.parent} a cnnzoo run?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


class CsvLog:
    """An append-only CSV log that can be cut back to a checkpoint's row count."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = path
        self.fields = fields
        self.rows = 0
        if path.exists():
            with open(path, newline="") as handle:
                self.rows = max(0, sum(1 for _ in handle) - 1)

    def truncate(self, rows: int) -> None:
        """Keep the header and the first `rows` rows (what a checkpoint had seen)."""
        if not self.path.exists():
            self.rows = 0
            return
        with open(self.path, newline="") as handle:
            lines = handle.readlines()[: rows + 1]
        atomic_write_text(self.path, "".join(lines))
        self.rows = max(0, len(lines) - 1)

    def append(self, rows: list[dict[str, Any]]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)
            handle.flush()
        self.rows += len(rows)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Run:
    """A finished or interrupted run, read back for eval, predict, resume and compare."""

    path: Path
    config: ExperimentConfig
    info: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def results(self) -> dict[str, Any] | None:
        path = self.path / RESULTS
        return read_json(path) if path.exists() else None


def open_run(path: str | Path) -> Run:
    """Read a run directory's config and run.json, with clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no run directory {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a run directory (a folder made by cnnzoo train)")
    if not (path / CONFIG).exists() or not (path / RUN).exists():
        raise CheckpointError(
            f"{path} is not a cnnzoo run: it has no {CONFIG} and {RUN} (made by cnnzoo train)"
        )
    try:
        config = load_config(path / CONFIG)
    except ConfigError as exc:
        raise CheckpointError(f"the run's config cannot be read: {exc}") from None
    info = read_json(path / RUN)
    if not isinstance(info, dict) or "classes" not in info:
        raise CheckpointError(f"{path / RUN} is damaged: it has no class names")
    return Run(path, config, info)


def command_line() -> str:
    args = [os.path.basename(sys.argv[0]) if sys.argv else "cnnzoo", *sys.argv[1:]]
    if args[0] in ("__main__.py", "-m"):
        args[0] = "cnnzoo"
    return shlex.join(args)
