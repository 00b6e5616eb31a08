"""One study on a real PostgreSQL server shared by several `cnnzoo tune` processes (as
several machines would): exactly N finished trials, a killed process's trials retried
by the survivor, a joiner with another space refused, and a report from the storage
alone. The server is a throwaway cluster (tests/tune/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers.common import run_process, write
from tests.tune.load import open_at_once
from tests.tune.test_tune import space_file, tiny

pytestmark = pytest.mark.slow  # every test here starts a server or processes


def _tune(config: Path, space: Path, url: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnzoo", "tune", "-c", str(config), "--space", str(space),
            "--storage", url, "--study", "s", "--out", str(out), "--workers", "2", "-q", *extra]


def _start(command: list[str]) -> subprocess.Popen:
    # Its own process group: a SIGKILL to the group is a machine that dies, workers and all.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, err


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=url).get_trials()


def _finished(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_two_processes_started_at_once_finish_exactly_n_and_report_alike(tmp_path,
                                                                         pg_database):
    _, _, url = pg_database
    config, space = tiny(tmp_path, epochs=1), space_file(tmp_path, trials=6)
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    # At the same moment on an empty database: both create Optuna's tables and the study.
    processes = [_start(_tune(config, space, url, out)) for out in outs]
    for process in processes:
        code, err = _finish(process)
        assert code == 0, err
        assert "Traceback" not in err
    trials = _trials(url)
    finished = _finished(trials)
    assert len(finished) == 6  # never more, never fewer
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["run_dir"] for t in finished}) == 6
    for trial in finished:  # each machine's trials under its own --out
        run = Path(trial.user_attrs["run_dir"])
        assert run.parent.parent in outs
        assert (run / "results.json").is_file() == (trial.state == TrialState.COMPLETE)
    first = (outs[0] / "best.yaml").read_text()
    assert (outs[1] / "best.yaml").read_text() == first

    report = tmp_path / "report"
    made = run_process("tune", "--report", "--storage", url, "--study", "s", "--out", report)
    assert made.code == 0, made.err
    assert (report / "best.yaml").read_text() == first
    assert (report / "trials.csv").read_text() == (outs[0] / "trials.csv").read_text()
    assert (report / "history.png").is_file()
    assert not (report / "trials").exists()  # a report runs nothing


def test_a_killed_process_trials_are_retried_by_the_survivor(tmp_path, pg_database):
    _, _, url = pg_database
    config = tiny(tmp_path, epochs=6)
    space = write(tmp_path / "space.yaml", space_file(tmp_path, 4).read_text().replace(
        "startup_trials: 1", "prune: false"))
    doomed, survivor = tmp_path / "doomed", tmp_path / "survivor"
    # Beats every 2 s: a loaded machine must not starve a live trial into looking dead.
    victim = _start(_tune(config, space, url, doomed, "--heartbeat", "2"))
    other = _start(_tune(config, space, url, survivor, "--heartbeat", "2"))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(
                p.stat().st_size > 0 and not (p.parent / "results.json").exists()
                for p in (doomed / "trials").glob("*/metrics.csv")):
            time.sleep(0.2)
        assert victim.poll() is None, "the first process ended before any trial got going"
        os.killpg(victim.pid, signal.SIGKILL)  # the machine dies: the command and its workers
        victim.wait()
        code, err = _finish(other)
    finally:
        for process in (victim, other):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert code == 0, err
    trials = _trials(url)
    assert len(_finished(trials)) == 4
    killed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert killed, "no trial of the killed process was failed"
    for trial in killed:
        assert Path(trial.user_attrs["run_dir"]).parent.parent == doomed
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
        assert len(retries) == 1, trial.number
        assert retries[0].state == TrialState.COMPLETE
        assert retries[0].params == trial.params
        assert Path(retries[0].user_attrs["run_dir"]).parent.parent == survivor


def test_a_joining_process_with_another_space_or_config_is_refused(tmp_path, pg_database, cli):
    _, _, url = pg_database
    config, space = tiny(tmp_path, epochs=1), space_file(tmp_path, trials=1)
    first = cli("tune", "-c", config, "--space", space, "--storage", url, "--study", "s",
                "--out", tmp_path / "a", "-q")
    assert first.code == 0, first.err
    other_space = write(tmp_path / "other.yaml", space.read_text().replace("[3, 5]", "[3, 7]"))
    for args, what in ((["--space", other_space], "another space"),
                       (["--space", space, "--set", "train.epochs=2"], "another config")):
        out = tmp_path / "b"
        refused = cli("tune", "-c", config, *args, "--storage", url, "--study", "s",
                      "--out", out, "-q")
        assert refused.code == 2, refused.err
        message = refused.err.strip()
        assert message.count("\n") == 0 and "Traceback" not in message
        assert f"study 's' in {url} was started with {what}" in message
        assert "--study" in message  # the fix: the same files, or a new study name
        assert not out.exists()
    assert len(_finished(_trials(url))) == 1


def test_processes_creating_the_tables_at_once_all_open_the_storage(postgres):
    """Two machines starting together both create Optuna's tables: without a retry one
    fails on PostgreSQL's catalogue ("duplicate key value violates unique constraint
    pg_type_typname_nsp_index"), which 6 processes on a new database hit most times."""
    for attempt in range(3):
        answers = open_at_once(postgres.create_database(f"race{attempt}"), 6)
        assert answers == ["ok"] * 6
