"""A load on a study's storage: worker processes running tune's own trial loop
(`run_trials`: the checks before each ask and after each trial, heartbeats, stale-trial
retries) on a trivial objective, so that the storage is all that is measured. Used by
tests/tune/test_storage_load.py and scripts/bench_tune_storage.py."""

from __future__ import annotations

import multiprocessing
import time
import traceback
from dataclasses import dataclass

import optuna


def square(trial: optuna.Trial) -> float:
    """(x - 0.3)^2: the minimum is known, the work is nothing."""
    x = trial.suggest_float("x", -1.0, 1.0)
    return (x - 0.3) ** 2


def _worker(url: str, study: str, trials: int, errors: multiprocessing.SimpleQueue) -> None:
    from cnnzoo.tune.storage import open_storage
    from cnnzoo.tune.study import run_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        loaded = optuna.load_study(study_name=study, storage=open_storage(url, 5),
                                   sampler=optuna.samplers.RandomSampler())
        run_trials(loaded, square, trials, url, heartbeat=5, poll_seconds=0.05)
        # A trial that failed on a storage error is the failure this load looks for.
        for trial in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if not trial.user_attrs.get("surplus"):
                errors.put(f"trial {trial.number} failed")
    except Exception:  # reported to the parent, which fails the load
        errors.put(traceback.format_exc())


@dataclass
class Load:
    seconds: float  # wall time from the first worker's start to the last one's end
    trial_seconds: float  # from the first trial's start to the last one's end
    finished: int  # complete trials in the study at the end
    errors: list[str]  # tracebacks and failed trials: none on a storage that copes

    @property
    def trials_per_second(self) -> float:
        return self.finished / self.trial_seconds


def run_load(url: str, workers: int, trials: int, study: str = "load") -> Load:
    """Create the study, run `workers` processes on it until `trials` trials finished."""
    from cnnzoo.tune.storage import open_storage

    created = optuna.create_study(storage=open_storage(url, 5), study_name=study)
    context = multiprocessing.get_context("spawn")
    errors = context.SimpleQueue()
    processes = [context.Process(target=_worker, args=(url, study, trials, errors))
                 for _ in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=900)
        if process.is_alive():
            process.kill()
            errors.put("a worker did not finish in 900 s")
        elif process.exitcode != 0:
            errors.put(f"a worker exited with {process.exitcode}")
    seconds = time.perf_counter() - started
    found = []
    while not errors.empty():
        found.append(errors.get())
    done = created.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
            ).total_seconds() if done else float("nan")
    return Load(seconds, span, len(done), found)


def _open(url: str, start: float, results: multiprocessing.SimpleQueue) -> None:
    from cnnzoo.tune.storage import open_storage

    time.sleep(max(0.0, start - time.time()))  # every process at the same moment
    try:
        open_storage(url, 5)
        results.put("ok")
    except Exception as exc:  # the answer is what the parent checks
        results.put(f"{type(exc).__name__}: {exc}")


def open_at_once(url: str, processes: int) -> list[str]:
    """Open one new storage from `processes` processes at the same moment; their answers
    ("ok", or the error). Each creates Optuna's tables if it finds none."""
    context = multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    start = time.time() + 3.0  # after every process has imported optuna
    started = [context.Process(target=_open, args=(url, start, results))
               for _ in range(processes)]
    for process in started:
        process.start()
    for process in started:
        process.join(timeout=300)
    return [results.get() for _ in started if not results.empty()]
