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
                       (cnnzoo.runs.lock)
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

from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.errors import CheckpointError, CnnzooError, ConfigError
from cnnzoo.runs.lock import RunLock, claim_new_run_dir, lock_run, other_holder, refuse_live
from cnnzoo.utils.files import atomic_write_bytes, atomic_write_text, check_writable

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

    from cnnzoo.version import __version__

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


def default_run_dir(name: str, base: Path = Path("runs"), *, claim: bool = False) -> Path:
    """runs/NAME-TIME (or -2, -3, ... when taken). With `claim`, the directory is also
    created and locked for this process, atomically: two runs started in the same
    second get two directories."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / f"{name}-{stamp}"
    n = 1
    while True:
        if not path.exists():
            if not claim:
                return path
            try:
                claim_new_run_dir(path, holds_run, exclusive=True)
                return path
            except FileExistsError:
                pass  # another run took it between the check and the mkdir
        n += 1
        path = base / f"{name}-{stamp}-{n}"


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
    check_writable(path, folder=True)


def refuse_finished(path: Path) -> None:
    """Refuse to resume a run that has been tested: a resume could only test it again
    and rewrite its results.json, metrics.csv and pictures. Its config cannot change on
    a resume, so there is nothing left for it to train."""
    if (path / RESULTS).exists():
        quoted = shlex.quote(str(path))
        raise CnnzooError(
            f"cannot resume {path}: the run is finished (its {RESULTS} holds its test "
            f"result) and is left as it is; evaluate it with `cnnzoo eval {quoted}`, or "
            f"train on from its weights in a new run with `cnnzoo train --config "
            f"{quoted}/{CONFIG} --init-from {quoted} --out NEW_DIR`"
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
            with open(path, "rb") as handle:  # bytes: a damaged file still has lines
                self.rows = max(0, sum(1 for _ in handle) - 1)

    def truncate(self, rows: int) -> None:
        """Keep the header and the first `rows` rows (what a checkpoint had seen)."""
        if not self.path.exists():
            self.rows = 0
            return
        with open(self.path, "rb") as handle:
            lines = handle.readlines()[: rows + 1]
        atomic_write_bytes(self.path, b"".join(lines))
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
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None


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
        if not path.exists():
            return None
        results = read_json(path)
        check_results(results, path)
        return results


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_run_info(info: Any, path: Path) -> None:
    """run.json as cnnzoo writes it: the fields that eval, predict and viz use, each of
    the right type, so that a damaged file is one clear error and never an IndexError."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} is damaged: expected a JSON object, got "
                              f"{type(info).__name__}")
    classes = info.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path} is damaged: 'classes' must be a list of class names, "
                              f"got {str(classes)[:60]}")
    shape = info.get("input")
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise CheckpointError(f"{path} is damaged: 'input' must be [width, height, depth], "
                              f"got {str(shape)[:60]}")
    for key in ("mean", "std"):
        values = info.get(key)
        if not (isinstance(values, list) and len(values) == shape[2]
                and all(_is_number(v) for v in values)):
            raise CheckpointError(f"{path} is damaged: '{key}' must be {shape[2]} numbers, "
                                  f"got {str(values)[:60]}")
    if any(v == 0 for v in info["std"]):
        raise CheckpointError(f"{path} is damaged: 'std' holds a zero")


RESULT_NUMBERS = ("params", "macs", "test_accuracy", "train_seconds")


def check_results(results: Any, path: Path) -> None:
    """results.json as cnnzoo writes it, as far as compare reads it."""
    if not isinstance(results, dict):
        raise CheckpointError(f"{path} is damaged: expected a JSON object, got "
                              f"{type(results).__name__}")
    for key in RESULT_NUMBERS:
        if not _is_number(results.get(key)):
            raise CheckpointError(f"{path} is damaged: '{key}' must be a number, got "
                                  f"{str(results.get(key))[:60]}")
    epochs = results.get("epochs")
    if epochs is not None and not (isinstance(epochs, int) and not isinstance(epochs, bool)):
        raise CheckpointError(f"{path} is damaged: 'epochs' must be a whole number")


def check_fits_network(run: Run, outputs: int, input_shape: list[int]) -> None:
    """run.json must describe the network the run's config builds: as many classes as it
    has outputs, and its input volume."""
    if len(run.classes) != outputs:
        raise CheckpointError(
            f"{run.path / RUN} is damaged: it names {len(run.classes)} classes but the "
            f"run's network gives {outputs} outputs"
        )
    if list(run.info["input"]) != list(input_shape):
        raise CheckpointError(
            f"{run.path / RUN} is damaged: its input {run.info['input']} is not the "
            f"network's {list(input_shape)}"
        )


@dataclass(frozen=True)
class Training:
    """A run that another live process is training into."""

    path: Path
    done: int  # epochs finished (in metrics.csv)
    epochs: int  # the config's train.epochs
    pid: int | None

    @property
    def epoch(self) -> int:
        """The epoch under way, from 1 (the last one while the run is being tested)."""
        return min(self.done + 1, self.epochs)

    def short(self) -> str:
        return f"still training (epoch {self.epoch}/{self.epochs})"

    def line(self) -> str:
        by = f", process {self.pid}" if self.pid is not None else ""
        last = f"the checkpoint after epoch {self.done}" if self.done else "no finished epoch yet"
        return (f"{self.path} is still training (epoch {self.epoch}/{self.epochs}{by}): what "
                f"is read is {last}, not the finished run")


def still_training(run: Run) -> Training | None:
    """The run's progress while another live process trains into it, else None: what is
    read of it is its last checkpoint, which a reader must not pass off as final."""
    pid = other_holder(run.path)
    if pid is None:
        return None
    try:
        done = len({row.get("epoch") for row in read_metrics(run.path)
                    if row.get("split") == "train"})
    except CheckpointError:
        done = 0
    return Training(run.path, done, run.config.train.epochs, pid if pid > 0 else None)


def warn_if_training(run: Run) -> None:
    """Say on stderr that `run` is still training, when it is."""
    training = still_training(run)
    if training is not None:
        print(f"warning: {training.line()}", file=sys.stderr, flush=True)


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
    check_run_info(info, path / RUN)
    return Run(path, config, info)


def command_line() -> str:
    args = [os.path.basename(sys.argv[0]) if sys.argv else "cnnzoo", *sys.argv[1:]]
    if args[0] in ("__main__.py", "-m"):
        args[0] = "cnnzoo"
    return shlex.join(args)
