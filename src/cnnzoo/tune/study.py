"""`cnnzoo tune`: a hyperparameter search on Optuna, each trial an ordinary run.

The study lives in an Optuna storage (a SQLite file in the output directory by
default, a PostgreSQL URL, or `journal:PATH`; see cnnzoo.tune.storage), so the same
command started again, or on several machines, works on one study. It is created
once, before any worker starts, with the base experiment and the space stored in it
(cnnzoo.tune.record). Workers are processes; each asks the storage for a trial,
trains it with `fit` into `OUT/trials/NNNN/`, and reports every epoch's validation
metric to the pruner.

Exactly `trials` trials finish (complete or pruned), however many processes share the
study: a worker asks for a trial only while finished + running trials are fewer, and a
trial that finds, once asked, that the trials numbered before it already fill the
study is refused before it trains (two workers may ask for the last place at once).
A worker that dies mid-trial stops sending heartbeats; another one marks its trial
failed and enqueues the same parameters again, and a worker with nothing left to ask
waits while trials are still running, so that a dead worker's trial is retried.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cnnzoo.config.experiment import load_config, rename
from cnnzoo.errors import CnnzooError, ConfigError
from cnnzoo.training.callbacks import Callback, RunContext, default_callbacks
from cnnzoo.training.metrics import EpochMetrics
from cnnzoo.tune.record import StudyRecord, read_record, write_record
from cnnzoo.tune.space import SearchSpace, load_space, override, validate_space
from cnnzoo.tune.storage import (
    beating,
    check_storage,
    default_storage,
    fail_stale_trials,
    is_database_error,
    is_journal,
    open_storage,
    shown,
)
from cnnzoo.utils.files import check_writable

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "surplus"
_RECORD_WAIT = 10.0  # seconds a joining process waits for the creator to store the record


@dataclass(frozen=True)
class TuneSettings:
    """Everything a worker process needs (it is pickled to start one)."""

    config: str  # experiment file or bundled name
    base: tuple[str, ...]  # --set overrides applied to every trial
    space_path: str
    out: Path
    storage: str | None  # an Optuna URL, or journal:PATH; None: sqlite in OUT
    study: str
    trials: int  # finished trials the study ends with (the total, not an increment)
    workers: int
    threads: int  # torch threads per worker: the cores shared out
    heartbeat: int  # seconds between heartbeats; a trial silent for 3x this is failed
    data_root: str | None
    device: str | None

    @property
    def url(self) -> str:
        return self.storage if self.storage is not None else default_storage(self.out)


def open_study(settings: TuneSettings, space: SearchSpace) -> optuna.Study:
    """Create the study, or join it when it exists with the same config and space."""
    storage = open_storage(settings.url, settings.heartbeat)
    sampler = optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, space.trials // 3)))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials,
                                    n_warmup_steps=space.warmup_epochs)
        if space.prune else optuna.pruners.NopPruner())
    direction = StudyDirection[space.direction.upper()]
    try:
        storage.create_new_study([direction], settings.study)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False  # another process (or an earlier run) made it: join it
    study = optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler,
                              pruner=pruner)
    ours = StudyRecord(load_config(settings.config, list(settings.base)).to_yaml(), space.text)
    stored = None if created else _wait_for_record(study)
    if stored is None:
        write_record(study, ours)
    elif stored != ours:
        what = "space" if stored.config_text == ours.config_text else "config (or --set)"
        raise ConfigError(
            f"study '{settings.study}' in {shown(settings.url)} was started with another "
            f"{what}",
            source=space.source,
            fix="give every process the same --config, --set and --space to share the study, "
            "or a new --study name")
    if study.direction != direction:
        raise ConfigError(f"study '{settings.study}' {study.direction.name.lower()}s, but the "
                          f"space asks for {space.objective}", source=space.source)
    return study


def _wait_for_record(study: optuna.Study) -> StudyRecord | None:
    """The record its creator stores right after creating the study; a study that has
    trials but no record was made without one (None: this process adopts it)."""
    deadline = time.monotonic() + _RECORD_WAIT
    while (record := read_record(study)) is None and time.monotonic() < deadline:
        if study.get_trials(deepcopy=False):
            return None
        time.sleep(0.2)
    return record


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials. A waiting trial (a retry) is not counted: it is what
    the next worker to ask gets."""
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == TrialState.RUNNING and not t.user_attrs.get(SURPLUS_ATTR)
                  for t in trials)
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
        try:
            return self._train(trial)
        finally:
            # A trained network and its data go before the next trial is built (a full
            # collection takes a moment, which the storage's load tests leave out).
            gc.collect()

    def _train(self, trial: optuna.Trial) -> float:
        from cnnzoo.training.stopping import Diverged
        from cnnzoo.training.trainer import fit

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


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], trials: int,
               storage: str, heartbeat: int, stop: Callable[[], bool] = lambda: False,
               poll_seconds: float = 1.0) -> bool:
    """Run trials of `study` until it has `trials` finished ones (True) or `stop` says so.

    Any number of processes may run this on one study: the checks before each ask and
    after each trial keep the finished trials to exactly `trials`."""
    guarded = _Guarded(objective, trials, heartbeat if is_journal(storage) else None)
    while not stop():
        fail_stale_trials(study, storage, heartbeat)
        finished, running = counts(study)
        if finished >= trials:
            return True
        if finished + running >= trials:
            # Not done until those finish, and one of them may belong to a dead worker:
            # wait, so that its retry is picked up here once its heartbeat is stale.
            time.sleep(poll_seconds)
            continue
        study.optimize(guarded, n_trials=1, catch=(TrialRefused,))
    return False


class _Guarded:
    """The objective behind the check that the study still needs the trial, with the
    journal's heartbeat around it (Optuna beats for an RDB storage itself)."""

    def __init__(self, objective: Callable[[optuna.Trial], float], trials: int,
                 beat_every: int | None) -> None:
        self.objective = objective
        self.trials = trials
        self.beat_every = beat_every

    def __call__(self, trial: optuna.Trial) -> float:
        self._check_needed(trial)
        if self.beat_every is None:
            return self.objective(trial)
        with beating(trial, self.beat_every):
            return self.objective(trial)

    def _check_needed(self, trial: optuna.Trial) -> None:
        """Refuse a trial when the trials numbered before it already fill the study: two
        workers may ask for the last place at the same moment, and the later one yields."""
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if not is_needed(earlier, self.trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise TrialRefused(f"trial {trial.number} is not needed: the study is full")


def is_needed(earlier: list[FrozenTrial], trials: int) -> bool:
    """Whether a trial may train, given the trials numbered before it: those that finished,
    that are training (not refused themselves) or that wait to be retried each hold a
    place. A retry enqueued just before a new trial was made waits with a lower number:
    counting it keeps the two from both finishing past `trials`."""
    held = sum(t.state in FINISHED or t.state == TrialState.WAITING or (
        t.state == TrialState.RUNNING and not t.user_attrs.get(SURPLUS_ATTR)) for t in earlier)
    return held < trials


def run_worker(settings: TuneSettings, poll_seconds: float = 1.0) -> int:
    """Run trials until the study has `settings.trials` finished ones; the signal that
    stopped the worker, or 0."""
    import torch

    from cnnzoo.training.stopping import Interrupted

    torch.set_num_threads(settings.threads)
    # Optuna would log every failed trial with its traceback; the table at the end says it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    stop = _StopFlag()
    space = load_space(settings.space_path)
    study = open_study(settings, space)
    try:
        run_trials(study, Objective(settings, space), settings.trials, settings.url,
                   settings.heartbeat, stop=lambda: bool(stop.signum), poll_seconds=poll_seconds)
    except Interrupted:
        return signal.SIGINT
    return stop.signum


def _worker_main(settings: TuneSettings, errors: Any) -> None:
    """A worker process: a user error goes to the parent, which raises it."""
    try:
        code = 128 + signum if (signum := run_worker(settings)) else 0
    except CnnzooError as exc:
        errors.put(str(exc))
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit work from the parent's modules in a spawned child


def tune(settings: TuneSettings, show_progress: bool = True) -> optuna.Study:
    """Validate the space, run the study with `settings.workers` processes, report.

    Nothing is created before the storage URL, the space, the config and --out are
    known to be good; a storage outside OUT is opened before OUT is made."""
    if settings.storage is not None:
        check_storage(settings.storage)
    space = load_space(settings.space_path)
    validate_space(space, settings.config, list(settings.base))
    settings = replace(settings, trials=settings.trials or space.trials)
    check_writable(settings.out, "--out", folder=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the bar says what INFO would
    if settings.storage is None:
        settings.out.mkdir(parents=True, exist_ok=True)
    study = open_study(settings, space)
    settings.out.mkdir(parents=True, exist_ok=True)
    interrupted = _run_workers(settings, study, show_progress)
    from cnnzoo.tune.report import write_report

    write_report(study, settings.out)
    if interrupted:
        # The trials the workers were training are recorded as failed; the resumed study
        # runs others in their place.
        print(f"stopped; the study is intact. Run the same command again to continue it "
              f"(study '{settings.study}' in {shown(settings.url)})", file=sys.stderr)
        raise KeyboardInterrupt
    return study


def report(storage: str, study_name: str | None, out: Path) -> optuna.Study:
    """`tune --report`: trials.csv, best.yaml and the pictures of a study, from its storage
    alone (any machine that reaches it; the trials' run directories may be elsewhere)."""
    check_storage(storage, existing=True)
    check_writable(out, "--out", folder=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handle = open_storage(storage, heartbeat=60, create=False)
    try:
        names = optuna.get_all_study_names(storage=handle)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        raise CnnzooError(f"--storage {shown(storage)} holds no Optuna study (no study tables "
                          "there); give the storage the study was run with") from None
    if study_name is None and len(names) == 1:
        study_name = names[0]
    if study_name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise CnnzooError(f"no study named '{study_name}' in {shown(storage)} (studies there: "
                          f"{known}); give --study NAME")
    study = optuna.load_study(study_name=study_name, storage=handle)
    out.mkdir(parents=True, exist_ok=True)
    from cnnzoo.tune.report import write_report

    write_report(study, out, shown(storage))
    return study


def _run_workers(settings: TuneSettings, study: optuna.Study, show_progress: bool) -> bool:
    """Start the workers and wait for them, with a progress bar; True if interrupted."""
    import multiprocessing

    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")
    errors = context.SimpleQueue()
    workers = [context.Process(target=_worker_main, args=(settings, errors), name=f"tune-{i}")
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
    if not errors.empty():
        raise CnnzooError(errors.get())  # every worker meets the same error: one says it
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
