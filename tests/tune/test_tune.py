"""`cnnzoo tune`: bad spaces refused before a study exists, the pruner stopping a
hopeless trial, and real studies (several workers, resume, a worker killed mid-trial)
on tiny fake data. The svm loss is tested in tests/training/test_losses.py."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cnnzoo.config.experiment import load_config
from tests.helpers.common import run_process, write

TINY = """
model:
  layers:
    - input: {width: 12, height: 12, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: same, activation: relu}
    - pool: 2
    - fc: 10
data: {dataset: fake, val_split: 0.25, limit_train: 64, limit_test: 32}
train:
  epochs: EPOCHS
  batch_size: 32
  optimizer: {name: adam, lr: 0.01}
  device: cpu
"""

SPACE = """
trials: TRIALS
objective: val_accuracy
startup_trials: 1
space:
  train.optimizer.lr: {low: 1.0e-3, high: 0.1, log: true}
  model.layers[1].conv.kernel: [3, 5]
  model.layers[1].conv.padding_mode: [zeros, reflect]
  train.loss: [cross_entropy, svm]
"""


def tiny(tmp_path: Path, epochs: int = 2) -> Path:
    return write(tmp_path / "tiny.yaml", TINY.replace("EPOCHS", str(epochs)))


def space_file(tmp_path: Path, trials: int = 4, text: str = SPACE) -> Path:
    return write(tmp_path / "space.yaml", text.replace("TRIALS", str(trials)))


BAD_SPACES = {
    "unknown key": ("space:\n  train.optimizer.lrr: [0.1, 0.01]\n", 2,
                    ["lrr", "did you mean 'lr'"]),
    "refused value": ("space:\n  model.layers[1].conv.padding_mode: [zeros, mirror]\n", 2,
                      ["mirror", "padding_mode must be one of"]),
    "refused range end": ("space:\n  train.optimizer.lr: {low: -1.0, high: 0.1}\n", 2,
                          ["-1.0", "lr"]),
    "missing layer": ("trials: 3\nspace:\n  model.layers[9].conv.kernel: [3]\n", 3,
                      ["model.layers.9 does not exist"]),
    "empty choices": ("space:\n  model.layers[1].conv.kernel: []\n", 2, ["empty"]),
    "low above high": ("space:\n  train.optimizer.lr: {low: 0.5, high: 0.1}\n", 2,
                       ["low must not be above high"]),
    "not a mapping": ("- train.optimizer.lr\n- [0.1]\n", 1, ["must be a mapping"]),
    "unknown top key": ("trails: 3\nspace:\n  train.epochs: [1]\n", 1,
                        ["did you mean 'trials'"]),
    "bad objective": ("objective: accuracy\nspace:\n  train.epochs: [1]\n", 1,
                      ["val_accuracy or val_loss"]),
    "svm with val_loss": ("objective: val_loss\nspace:\n  train.loss: [cross_entropy, svm]\n",
                          3, ["val_accuracy"]),
}


@pytest.mark.parametrize("name", list(BAD_SPACES))
def test_a_bad_space_is_refused_before_any_study(tmp_path, cli, name):
    text, line, words = BAD_SPACES[name]
    space = write(tmp_path / "space.yaml", text)
    out = tmp_path / "study"
    result = cli("tune", "-c", tiny(tmp_path), "--space", space, "--out", out, "-q")
    assert result.code == 2, result.err
    message = result.err.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert f"{space}: " in message and f"line {line}" in message
    for word in words:
        assert word in message
    assert not out.exists()  # no study, no directory


def test_a_config_without_validation_split_is_refused(tmp_path, cli):
    out = tmp_path / "study"
    result = cli("tune", "-c", tiny(tmp_path), "--set", "data.val_split=0",
                 "--space", space_file(tmp_path), "--out", out)
    assert result.code == 2 and "validation split" in result.err
    assert not out.exists()


def test_every_bundled_space_validates_against_its_config():
    from cnnzoo.config.bundled import bundled_spaces
    from cnnzoo.tune.space import load_space, validate_space

    assert bundled_spaces()
    for name in bundled_spaces():
        space = load_space(name)
        validate_space(space, name, [])
        assert space.trials >= 1 and space.params


def _settings(tmp_path: Path, trials: int, workers: int = 1, config: Path | None = None,
              space: Path | None = None):
    from cnnzoo.tune.study import TuneSettings

    out = tmp_path / "study"
    out.mkdir(exist_ok=True)
    return TuneSettings(config=str(config or tiny(tmp_path)), base=(),
                        space_path=str(space or space_file(tmp_path, trials)), out=out,
                        storage=None, study="s", trials=trials,
                        workers=workers, threads=1, heartbeat=1, data_root=None, device="cpu")


@pytest.mark.slow
def test_the_pruner_stops_a_hopeless_trial(tmp_path):
    """Two trials reached 95% at every epoch; one with a learning rate of 1e-7 on random
    labels stays near chance and must be stopped after its first epoch."""
    from cnnzoo.tune.space import load_space
    from cnnzoo.tune.study import Objective, open_study

    space_text = ("trials: 3\nstartup_trials: 2\nwarmup_epochs: 0\n"
                  "space:\n  train.optimizer.lr: {low: 1.0e-7, high: 0.1, log: true}\n")
    settings = _settings(tmp_path, 3, config=tiny(tmp_path, epochs=4),
                         space=space_file(tmp_path, text=space_text))
    space = load_space(settings.space_path)
    study = open_study(settings, space)
    lr = optuna.distributions.FloatDistribution(1e-7, 0.1, log=True)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            params={"train.optimizer.lr": 0.01}, distributions={"train.optimizer.lr": lr},
            value=0.95, intermediate_values={1: 0.95, 2: 0.95, 3: 0.95, 4: 0.95}))
    study.enqueue_trial({"train.optimizer.lr": 1e-7})
    study.optimize(Objective(settings, space), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs"] == 1 and trial.user_attrs["planned_epochs"] == 4
    assert list(trial.intermediate_values) == [1]
    run = Path(trial.user_attrs["run_dir"])
    with open(run / "metrics.csv") as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1", "1"]  # train, val
    assert not (run / "results.json").exists()


@pytest.mark.slow
def test_the_last_epoch_is_never_pruned(tmp_path):
    """Pruning after the last epoch saves nothing; the trial completes with a test result."""
    from cnnzoo.tune.space import load_space
    from cnnzoo.tune.study import Objective, open_study

    space_text = ("trials: 3\nstartup_trials: 1\nwarmup_epochs: 0\n"
                  "space:\n  train.optimizer.lr: {low: 1.0e-7, high: 0.1, log: true}\n")
    settings = _settings(tmp_path, 2, config=tiny(tmp_path, epochs=1),
                         space=space_file(tmp_path, text=space_text))
    space = load_space(settings.space_path)
    study = open_study(settings, space)
    lr = optuna.distributions.FloatDistribution(1e-7, 0.1, log=True)
    study.add_trial(optuna.trial.create_trial(
        params={"train.optimizer.lr": 0.01}, distributions={"train.optimizer.lr": lr},
        value=0.95, intermediate_values={1: 0.95}))
    study.enqueue_trial({"train.optimizer.lr": 1e-7})
    study.optimize(Objective(settings, space), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.COMPLETE and trial.value < 0.95
    assert "test_accuracy" in trial.user_attrs


@pytest.mark.slow  # waits out three heartbeats
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")  # ask/tell here
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_silent_trial_is_failed_and_retried_on_every_storage(tmp_path, kind):
    """The heartbeat the workers rely on, on both kinds of storage (Optuna's on an RDB,
    cnnzoo's on the journal): a trial whose worker stopped beating is failed and its
    parameters are enqueued again."""
    from cnnzoo.tune.storage import BEAT_ATTR, fail_stale_trials, open_storage

    url = (f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite"
           else f"journal:{tmp_path / 'study.log'}")
    storage = open_storage(url, 1)
    study = optuna.create_study(storage=storage, study_name="s")
    study_id = storage.get_study_id_from_name("s")

    def beat(trial):
        if kind == "sqlite":
            storage.record_heartbeat(
                storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
        else:
            trial.set_user_attr(BEAT_ATTR, time.time())

    alive, silent = study.ask(), study.ask()
    silent.suggest_int("x", 0, 9)
    beat(silent)
    for _ in range(5):  # 5 s: past the grace period of 3 beats
        beat(alive)
        time.sleep(1.0)
    fail_stale_trials(study, url, 1)
    states = {t.number: t.state for t in study.trials}
    assert states[alive.number] == TrialState.RUNNING
    assert states[silent.number] == TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == silent.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].params == study.trials[silent.number].params
    fail_stale_trials(study, url, 1)  # a second look fails nothing twice
    assert len([t for t in study.trials if t.state == TrialState.WAITING]) == 1


def _finished(study_dir: Path, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}")
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_a_study_with_two_workers_then_resumed(tmp_path):
    config, out = tiny(tmp_path), tmp_path / "study"
    args = ["tune", "-c", config, "--space", space_file(tmp_path), "--out", out,
            "--study", "s", "--workers", "2", "-q"]
    first = run_process(*args, "--trials", "3")
    assert first.code == 0, first.err
    trials = _finished(out)
    assert len(trials) == 3
    for trial in trials:  # each an ordinary run with its parameters in its config
        run = Path(trial.user_attrs["run_dir"])
        assert run.parent == out / "trials"
        stored = load_config(run / "config.yaml")
        assert stored.train.optimizer.lr == pytest.approx(trial.params["train.optimizer.lr"])
        assert stored.train.loss.name == trial.params["train.loss"]
        conv = stored.model.layers[1]
        assert conv.kernel == (trial.params["model.layers[1].conv.kernel"],) * 2
        assert conv.padding_mode == trial.params["model.layers[1].conv.padding_mode"]
    with open(out / "trials.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    for name in ("best.yaml", "history.png", "slice.png"):
        assert (out / name).is_file(), name
    best = load_config(out / "best.yaml")
    assert best.name == "tiny-tuned" and best.data.dataset == "fake"
    stamps = {p.parent.name: p.stat().st_mtime for p in (out / "trials").glob("*/results.json")}

    again = run_process(*args, "--trials", "5")
    assert again.code == 0, again.err
    assert len(_finished(out)) == 5
    assert {p.parent.name: p.stat().st_mtime for p in (out / "trials").glob("*/results.json")
            if p.parent.name in stamps} == stamps  # the first three were not run again
    assert len(list((out / "trials").iterdir())) == 5  # only the two missing ones ran

    trained = run_process("train", "-c", out / "best.yaml", "--out", tmp_path / "best", "-q")
    assert trained.code == 0, trained.err
    compared = run_process("compare", *sorted((out / "trials").iterdir()), "--no-plot")
    assert compared.code == 0, compared.err


def _workers(parent: int) -> list[int]:
    """The spawned worker processes of `parent` (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_a_worker_killed_mid_trial_is_retried_and_the_study_completes(tmp_path):
    out = tmp_path / "study"
    space = space_file(tmp_path, 4).read_text().replace("startup_trials: 1", "prune: false")
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "tune", "-c", str(tiny(tmp_path, epochs=8)),
         "--space", str(write(tmp_path / "space.yaml", space)), "--out", str(out),
         "--study", "s", "--workers", "2", "--heartbeat", "1", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        victim = None
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            started = [p for p in (out / "trials").glob("*/metrics.csv")
                       if p.stat().st_size > 0 and not (p.parent / "results.json").exists()]
            workers = _workers(process.pid) if started else []
            if len(workers) == 2:
                victim = workers[0]
        assert victim is not None, "no trial got to its first epoch"
        os.kill(victim, signal.SIGKILL)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    failed = [t for t in study.trials if t.state == TrialState.FAIL
              and not t.user_attrs.get("surplus")]
    assert len(failed) == 1
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == failed[0].params
    assert len(_finished(out)) == 4


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_same_command_continues(tmp_path):
    out = tmp_path / "study"
    space = space_file(tmp_path, 2).read_text().replace("startup_trials: 1", "prune: false")
    args = ["tune", "-c", str(tiny(tmp_path, epochs=4)), "--space",
            str(write(tmp_path / "space.yaml", space)), "--out", str(out), "--study", "s",
            "--workers", "2", "-q"]
    # A terminal's Ctrl-C reaches the whole process group: the command and its workers.
    process = subprocess.Popen([sys.executable, "-m", "cnnzoo", *args], start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(
                p.stat().st_size > 0 for p in (out / "trials").glob("*/metrics.csv")):
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "the study is intact" in err and "Traceback" not in err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    again = run_process(*args)
    assert again.code == 0, again.err
    assert len(_finished(out)) == 2
