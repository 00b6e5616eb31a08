"""`cnnzoo tune`: a hyperparameter search on Optuna, each trial an ordinary run.

The study lives in an Optuna storage (a SQLite file in the output directory by
default, or any RDB URL, or `journal:PATH` for Optuna's journal file), so the same
command started again, or on several machines, works on one study. Workers are
processes; each asks the storage for a trial, trains it with `fit` into
`OUT/trials/NNNN/`, and reports every epoch's validation metric to the pruner.

A worker that dies mid-trial stops sending heartbeats; another worker then marks
its trial failed and enqueues the same parameters again (RetryHeartbeatStaleTrialCallback),
so the study still ends with the number of finished trials asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # public API has no journal heartbeat
from optuna.trial import TrialState

from cnnzoo.config.experiment import load_config, rename
from cnnzoo.errors import CnnzooError, ConfigError
from cnnzoo.training.callbacks import Callback, RunContext, default_callbacks
from cnnzoo.training.metrics import EpochMetrics
from cnnzoo.tune.space import SearchSpace, load_space, override, validate_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RETRIES = 3  # a trial whose worker died is run again at most this often
_HEARTBEAT_ATTR = "cnnzoo:heartbeat"
_SPACE_ATTR = "cnnzoo:space"
_SURPLUS_ATTR = "surplus"


@dataclass(frozen=True)
class TuneSettings:
    """Everything a worker process needs (it is pickled to start one)."""

    config: str  # experiment file or bundled name
    base: tuple[str, ...]  # --set overrides applied to every trial
    space_path: str
    out: Path
    storage: str  # an Optuna URL, or journal:PATH
    study: str
    trials: int  # finished trials the study ends with (the total, not an increment)
    workers: int
    threads: int  # torch threads per worker: the cores shared out
    heartbeat: int  # seconds between heartbeats; a trial silent for 3x this is failed
    data_root: str | None
    device: str | None


class _JournalHeartbeat(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal file with the heartbeat its RDB storage has: the time of each
    trial's last beat is a system attribute, and a running trial whose beat is older
    than the grace period is stale (clocks of machines sharing the file must agree)."""

    def __init__(self, path: str, interval: int) -> None:
        super().__init__(optuna.storages.journal.JournalFileBackend(path))
        self.interval = interval
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        limit = time.time() - 3 * self.interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running
                if t.system_attrs.get(_HEARTBEAT_ATTR, t.datetime_start.timestamp()) < limit]

    def get_heartbeat_interval(self) -> int | None:
        return self.interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.retry


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def open_storage(url: str, heartbeat: int) -> optuna.storages.BaseStorage:
    """The storage `url` names, with heartbeats and the retry of failed trials."""
    # Heartbeats and the retry callback are marked experimental; they are why we use them.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
        return _JournalHeartbeat(path, heartbeat)
    # SQLite serialises writers; several workers wait for the lock instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat,
            grace_period=3 * heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES))
    except (ImportError, ValueError) as exc:
        raise CnnzooError(f"--storage {url}: {exc}") from None


def open_study(settings: TuneSettings, space: SearchSpace) -> optuna.Study:
    """Create the study, or load it when it exists and was started with the same space."""
    storage = open_storage(settings.storage, settings.heartbeat)
    sampler = optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, space.trials // 3)))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials,
                                    n_warmup_steps=space.warmup_epochs)
        if space.prune else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=settings.study, sampler=sampler,
                                pruner=pruner, direction=space.direction, load_if_exists=True)
    identity = f"{settings.config}\n{settings.base}\n{space.text}"
    digest = hashlib.sha256(identity.encode()).hexdigest()
    stored = study.user_attrs.get(_SPACE_ATTR)
    if stored is None:
        study.set_user_attr(_SPACE_ATTR, digest)
    elif stored != digest:
        raise ConfigError(
            f"study '{settings.study}' in {settings.storage} was started with another config "
            f"or space", source=space.source,
            fix="run with the same --config, --set and --space to continue it, or give a new "
            "--study name")
    if study.direction.name.lower() != space.direction:
        raise ConfigError(f"study '{settings.study}' {study.direction.name.lower()}s, but the "
                          f"space asks for {space.objective}", source=space.source)
    return study


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials. A waiting trial (a retry) is not counted: it is what
    the next worker to ask gets."""
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return finished, running


class PruneOnEpoch(Callback):
    """Reports each epoch's validation metric to the trial; stops a hopeless one."""

    def __init__(self, trial: optuna.Trial, objective: str) -> None:
        self.trial = trial
        self.metric = objective.removeprefix("val_")  # accuracy or loss
        self.epochs = 0
        self.last: float | None = None

    def on_epoch_end(self, ctx: RunContext, epoch: int, metrics: list[EpochMetrics],
                     model: Any) -> None:
        val = next(m for m in metrics if m.split == "val")
        self.epochs = epoch + 1
        self.last = float(getattr(val, self.metric))
        self.trial.report(self.last, epoch + 1)
        # After the last epoch there is nothing left to save: the trial completes.
        if epoch + 1 < ctx.config.train.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch + 1}: {self.metric} {self.last:.4f}")


class TrialRefused(Exception):
    """A trial that could not run (a combination the config refuses, or surplus)."""


class Objective:
    """Trains one trial into OUT/trials/NNNN and returns its last validation metric."""

    def __init__(self, settings: TuneSettings, space: SearchSpace) -> None:
        self.settings = settings
        self.space = space

    def __call__(self, trial: optuna.Trial) -> float:
        from cnnzoo.training.stopping import Diverged
        from cnnzoo.training.trainer import fit

        self._check_needed(trial)
        overrides = [override(p.key, p.suggest(trial)) for p in self.space.params]
        try:
            config = load_config(self.settings.config, [*self.settings.base, *overrides])
        except ConfigError as exc:
            trial.set_user_attr("error", str(exc))
            print(f"trial {trial.number} not run: {exc}", file=sys.stderr)
            raise TrialRefused(str(exc)) from None
        run_dir = self.settings.out / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("planned_epochs", config.train.epochs)
        config = rename(config, f"{config.name}-trial{trial.number:04d}")
        pruning = PruneOnEpoch(trial, self.space.objective)
        started = time.perf_counter()
        try:
            result = fit(config, out=run_dir, data_root=self.settings.data_root,
                         device=self.settings.device, show_progress=False,
                         callbacks=[*default_callbacks(), pruning])
        except optuna.TrialPruned:
            self._note(trial, pruning.epochs, started, "pruned")
            raise
        except Diverged as exc:
            # A learning rate too high for the network is an answer, not a failure: the
            # trial stops like a pruned one and the sampler learns to avoid the region.
            self._note(trial, pruning.epochs, started, f"diverged: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        self._note(trial, config.train.epochs, started, None)
        trial.set_user_attr("test_accuracy", result.results["test_accuracy"])
        assert pruning.last is not None  # validate_space made sure there is a val split
        return pruning.last

    def _check_needed(self, trial: optuna.Trial) -> None:
        """Refuse a trial asked for when the trials before it already fill the study:
        two workers may ask for the last place at the same moment."""
        before = [t for t in trial.study.get_trials(deepcopy=False)
                  if t.number < trial.number and (t.state in FINISHED or (
                      t.state == TrialState.RUNNING and not t.user_attrs.get(_SURPLUS_ATTR)))]
        if len(before) >= self.settings.trials:
            trial.set_user_attr(_SURPLUS_ATTR, True)
            raise TrialRefused(f"trial {trial.number} is not needed: the study is full")

    @staticmethod
    def _note(trial: optuna.Trial, epochs: int, started: float, stopped: str | None) -> None:
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        if stopped is not None:
            trial.set_user_attr("stopped", stopped)


class _StopFlag:
    """SIGINT/SIGTERM between trials: finish nothing new. During a trial `fit` has its
    own handler, which checkpoints the run and raises Interrupted."""

    def __init__(self) -> None:
        self.signum = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum


def run_worker(settings: TuneSettings, poll_seconds: float = 1.0) -> int:
    """Run trials until the study has `settings.trials` finished ones; the exit code."""
    import torch

    from cnnzoo.training.stopping import Interrupted

    torch.set_num_threads(settings.threads)
    # Optuna would log every failed trial with its traceback; the table at the end says it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    stop = _StopFlag()
    space = load_space(settings.space_path)
    study = open_study(settings, space)
    objective = Objective(settings, space)
    while not stop.signum:
        optuna.storages.fail_stale_trials(study)
        finished, running = counts(study)
        if finished >= settings.trials:
            return 0
        if finished + running >= settings.trials:
            # Not done until those finish, and one of them may belong to a dead worker:
            # wait, so that its retry is picked up here.
            time.sleep(poll_seconds)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrialRefused,), gc_after_trial=True)
        except Interrupted:
            return 128 + signal.SIGINT
    return 128 + stop.signum


def _worker_main(settings: TuneSettings) -> None:
    """A worker process: user errors are one line on stderr and exit code 2."""
    try:
        code = run_worker(settings)
    except CnnzooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit work from the parent's modules in a spawned child


def tune(settings: TuneSettings, show_progress: bool = True) -> optuna.Study:
    """Validate the space, run the study with `settings.workers` processes, report."""
    space = load_space(settings.space_path)
    validate_space(space, settings.config, list(settings.base))
    settings = replace(settings, trials=settings.trials or space.trials)
    settings.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the bar says what INFO would
    study = open_study(settings, space)
    interrupted = _run_workers(settings, study, show_progress)
    from cnnzoo.tune.report import write_report

    write_report(study, settings, space)
    if interrupted:
        # The trials the workers were training are recorded as failed; the resumed study
        # runs others in their place.
        print(f"stopped; the study is intact. Run the same command again to continue it "
              f"(study '{settings.study}' in {settings.storage})", file=sys.stderr)
        raise KeyboardInterrupt
    return study


def _run_workers(settings: TuneSettings, study: optuna.Study, show_progress: bool) -> bool:
    """Start the workers and wait for them, with a progress bar; True if interrupted."""
    import multiprocessing

    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(settings,), name=f"tune-{i}")
               for i in range(settings.workers)]
    stopping = []
    previous = {sig: signal.signal(sig, lambda s, f: stopping.append(s))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=settings.trials, desc="trials", unit="trial", disable=not show_progress,
               dynamic_ncols=True)
    try:
        for worker in workers:
            worker.start()
        forwarded = False
        while any(w.is_alive() for w in workers):
            if stopping and not forwarded:
                # SIGTERM, not SIGINT: a worker that also got the terminal's Ctrl-C would
                # take a second SIGINT as "stop at once" and skip its checkpoint.
                for worker in workers:
                    if worker.is_alive() and worker.pid is not None:
                        os.kill(worker.pid, signal.SIGTERM)
                forwarded = True
            _update_bar(bar, study)
            for worker in workers:
                worker.join(timeout=1.0 / len(workers))
        _update_bar(bar, study)
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [w for w in workers if w.exitcode not in (0, None)]
    if failed and not stopping:
        codes = ", ".join(f"{w.name}: {w.exitcode}" for w in failed)
        finished, _ = counts(study)
        print(f"warning: workers ended abnormally ({codes})", file=sys.stderr)
        if finished < settings.trials:
            raise CnnzooError(f"the study has {finished} of {settings.trials} finished trials "
                              "after its workers stopped; run the same command to continue it")
    return bool(stopping)


def _update_bar(bar: Any, study: optuna.Study) -> None:
    finished, _ = counts(study)
    bar.n = min(finished, bar.total)
    with contextlib.suppress(ValueError):  # no complete trial yet
        bar.set_postfix_str(f"best {study.best_value:.4f} (trial {study.best_trial.number})",
                            refresh=False)
    bar.refresh()
