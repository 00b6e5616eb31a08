"""The runs under the lab's folder: what each is (running, finished, stopped, failed),
and the trainings the lab starts, stops and resumes.

A training is `python -m cnnzoo train` in a process of its own, so it goes through the
same run directory, lock and limits as the CLI, and a run started here can be resumed
there and the other way round. What the lab keeps of a training it started sits in
RUNS/.lab/NAME/ (a hidden folder, never listed as a run): the config text it was given,
the process's output (`train.log`) and the progress file the trainer rewrites.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.config.experiment import ExperimentConfig
from cnnzoo.config.limits import check_run_name
from cnnzoo.config.yamlio import load_yaml, read_config_text
from cnnzoo.errors import CheckpointError, CnnzooError, ConfigError
from cnnzoo.runs import rundir
from cnnzoo.runs.lock import RunBusy, holder
from cnnzoo.training.progress import PROGRESS_FILE
from cnnzoo.utils.files import atomic_write_text
from cnnzoo.utils.params import Where

LAB = ".lab"
LOG = "train.log"
PROGRESS = "progress.json"
STATUSES = ("running", "finished", "stopped", "failed")
STOPPED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


class RunNotFound(CnnzooError):
    """No run of that name under the lab's folder."""


class RunConflict(CnnzooError):
    """The run exists, or is in a state that does not allow what was asked."""


@dataclass
class Training:
    """A `cnnzoo train` process this lab started."""

    name: str
    process: subprocess.Popen

    @property
    def live(self) -> bool:
        return self.process.poll() is None


class RunManager:
    """The runs under `root`, and the trainings started from the lab."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trainings: dict[str, Training] = {}
        self.closing = threading.Event()  # set when the lab ends: event streams close
        self._starting = threading.Lock()  # picks a run's name and starts it as one step

    def run_dir(self, name: str) -> Path:
        """The folder of run `name`: one plain folder name directly under the root, not
        a link out of it (names come from URLs and request bodies)."""
        check_run_name(name, Where("run", ()))
        path = self.root / name
        if path.is_symlink() or (path.exists() and
                                 path.resolve().parent != self.root.resolve()):
            raise RunNotFound(f"no run named {name!r} under {self.root}")
        return path

    def lab_dir(self, name: str) -> Path:
        return self.root / LAB / name

    def names(self) -> list[str]:
        """Every run under the root, and trainings that have not made their folder yet."""
        found = set()
        if self.root.is_dir():
            found = {p.name for p in self.root.iterdir() if not p.name.startswith(".")
                     and not p.is_symlink() and p.is_dir() and rundir.holds_run(p)}
        return sorted(found | set(self.trainings))

    def status(self, name: str) -> tuple[str, str | None]:
        """(status, message): running, finished, stopped, or failed with its message."""
        path = self.run_dir(name)
        training = self.trainings.get(name)
        if training is not None and training.live:
            return "running", None
        if path.is_dir() and holder(path) is not None:
            return "running", None  # trained into by a process started elsewhere
        if (path / rundir.RESULTS).exists():
            return "finished", None
        code = training.process.returncode if training is not None else None
        if code in STOPPED_CODES or (code is None and (path / rundir.STATE).exists()):
            return "stopped", None
        if code is None and not path.is_dir() and not (self.lab_dir(name) / LOG).exists():
            raise RunNotFound(f"no run named {name!r} under {self.root}")
        return "failed", self.failure(name)

    def failure(self, name: str) -> str:
        """The error the training printed last, or what is known without it."""
        log = self.lab_dir(name) / LOG
        if log.exists():
            lines = log.read_text(errors="replace").splitlines()
            errors = [line for line in lines if line.startswith("error: ")]
            if errors:
                return errors[-1].removeprefix("error: ")
            if lines:
                return lines[-1][:500]
        return "the run ended without results or a checkpoint"

    def summary(self, name: str) -> dict[str, Any]:
        """One row of the runs list: name, config, status and the headline numbers."""
        status, message = self.status(name)
        path = self.run_dir(name)
        row: dict[str, Any] = {"run": name, "status": status, "message": message,
                               "config": None, "params": None, "test_accuracy": None,
                               "train_seconds": None, "epochs": None}
        try:
            data = load_yaml(read_config_text(path / rundir.CONFIG)).data
            row["config"] = data.get("name") if isinstance(data, dict) else None
        except ConfigError:
            pass  # a run still starting has no config.yaml yet
        results = self._results(path)
        if results is not None:
            row.update({key: results.get(key) for key in
                        ("params", "test_accuracy", "train_seconds", "epochs")})
        return row

    def detail(self, name: str) -> dict[str, Any]:
        """Everything the page shows of a run: status, run.json, results, config text,
        every metrics row and the pictures it has."""
        row = self.summary(name)
        path = self.run_dir(name)
        info = rundir.read_json(path / rundir.RUN) if (path / rundir.RUN).exists() else None
        config = ((path / rundir.CONFIG).read_text(errors="replace")
                  if (path / rundir.CONFIG).exists() else None)
        pictures = sorted(p.name for p in path.glob("*.png")) if path.is_dir() else []
        return {**row, "info": info, "results": self._results(path), "config_text": config,
                "metrics": rundir.read_metrics(path) if path.is_dir() else [],
                "pictures": pictures}

    @staticmethod
    def _results(path: Path) -> dict[str, Any] | None:
        try:
            return rundir.read_json(path / rundir.RESULTS) if (
                path / rundir.RESULTS).exists() else None
        except CheckpointError:
            return None

    def start(self, text: str, config: ExperimentConfig, name: str | None = None,
              overrides: list[str] = ()) -> str:
        """Start training `config` (read from `text` with `overrides`, as --set) into a
        new run; returns its name. A named run that exists is refused: resume it."""
        with self._starting:
            if name is None:
                name = self._free_name(config.name)
            path = self.run_dir(name)
            self._refuse_taken(name, path)
            lab = self.lab_dir(name)
            lab.mkdir(parents=True, exist_ok=True)
            # Named as the config is, since a file without `name:` is named by its stem.
            source = lab / f"{config.name}.yaml"
            atomic_write_text(source, text)
            (lab / PROGRESS).unlink(missing_ok=True)
            sets = [arg for item in overrides for arg in ("--set", item)]
            self._launch(name, ["--config", str(source), *sets, "--out", str(path)])
        return name

    def resume(self, name: str) -> None:
        """Continue a stopped run, as `cnnzoo train --resume` does."""
        with self._starting:
            path = self.run_dir(name)
            status, _ = self.status(name)
            if status == "running":
                raise RunBusy(path, holder(path), "resume")
            if not (path / rundir.STATE).exists():
                raise RunConflict(f"run {name!r} has no checkpoint to resume from ({status})")
            if status == "finished":
                raise RunConflict(f"run {name!r} has finished; train a new run instead")
            self.lab_dir(name).mkdir(parents=True, exist_ok=True)
            (self.lab_dir(name) / PROGRESS).unlink(missing_ok=True)
            self._launch(name, ["--resume", str(path)])

    def stop(self, name: str) -> None:
        """Ask a training started here to stop: SIGINT, as Ctrl-C in the CLI, so that
        it writes its checkpoint first."""
        training = self.trainings.get(name)
        if training is None or not training.live:
            status, _ = self.status(name)
            if status == "running":
                raise RunConflict(f"run {name!r} was started outside this lab; stop it "
                                  "where it runs (Ctrl-C)")
            raise RunConflict(f"run {name!r} is not running ({status})")
        training.process.send_signal(signal.SIGINT)

    def wait(self, name: str, timeout: float | None = None) -> int | None:
        training = self.trainings.get(name)
        return None if training is None else training.process.wait(timeout)

    def close(self) -> None:
        """Stop every training still running (the lab is ending): each writes its
        checkpoint and can be resumed."""
        live = [t for t in self.trainings.values() if t.live]
        for training in live:
            training.process.send_signal(signal.SIGINT)
        for training in live:
            try:
                training.process.wait(60)
            except subprocess.TimeoutExpired:
                training.process.kill()

    def _free_name(self, config_name: str) -> str:
        """NAME-TIME as `cnnzoo train` names runs (-2, -3, ... when taken)."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate, n = f"{config_name}-{stamp}", 1
        while (self.root / candidate).exists() or candidate in self.trainings:
            n += 1
            candidate = f"{config_name}-{stamp}-{n}"
        return candidate

    def _refuse_taken(self, name: str, path: Path) -> None:
        training = self.trainings.get(name)
        if (training is not None and training.live) or (path.is_dir() and holder(path)):
            raise RunBusy(path, holder(path) if path.is_dir() else None, "train into")
        if path.exists() and (not path.is_dir() or rundir.holds_run(path)):
            raise RunConflict(f"run {name!r} already exists; resume it, or give another name")

    def _launch(self, name: str, args: list[str]) -> None:
        lab = self.lab_dir(name)
        env = {**os.environ, PROGRESS_FILE: str(lab / PROGRESS), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "cnnzoo", "train", *args]
        with open(lab / LOG, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        self.trainings[name] = Training(name, process)
