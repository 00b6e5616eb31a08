"""Shared run directories: created atomically, locked while a process trains into
them, the lock gone with the process (SIGKILL included), and every command that would
write into a live run refused with the holder's process id."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.runs import lock as runlock
from cnnzoo.runs import rundir
from cnnzoo.training.callbacks import Callback
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import ROOT, write
from tests.helpers.datafiles import write_mnist

TINY = """
model:
  layers:
    - conv: {filters: 2, kernel: 3, activation: relu}
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0}
train: {epochs: 2, batch_size: 40, optimizer: {name: sgd, lr: 0.05}}
"""
USER_ERROR = 2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lockdata")
    write_mnist(root, n_train=120, n_test=20)
    return root


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", TINY)


HOLD = """
import sys, time
from pathlib import Path
from cnnzoo.runs import lock as runlock
runlock.lock_run(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder_process():
    """Start a process that locks a run directory as training does, then sleeps."""
    started: list[subprocess.Popen] = []

    def start(run_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _claim(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        runlock.claim_new_run_dir(Path(path), rundir.holds_run)
        results.put(("ok", os.getpid()))
        barrier.wait()  # hold the lock until every contender has tried
    except CnnzooError as exc:
        results.put(("refused", str(exc)))
        barrier.wait()


def test_of_many_processes_racing_for_one_new_run_directory_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(tmp_path / "run"), barrier, results))
             for _ in range(n)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    winners = [o for o in outcomes if o[0] == "ok"]
    assert len(winners) == 1, outcomes
    for kind, message in outcomes:
        if kind == "refused":
            assert f"process {winners[0][1]} is training into it" in message


def _default(base: str, barrier, results) -> None:
    barrier.wait()
    results.put(str(rundir.default_run_dir("same", Path(base), claim=True)))
    barrier.wait()


def test_runs_started_in_the_same_second_get_directories_of_their_own(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_default, args=(str(tmp_path), barrier, results))
             for _ in range(n)]
    for proc in procs:
        proc.start()
    paths = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert len(set(paths)) == n
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(p).name for p in paths)


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path, holder_process):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = holder_process(run_dir)
    assert runlock.holder(run_dir) == proc.pid
    with pytest.raises(runlock.RunBusy, match=f"process {proc.pid} is training into it"):
        runlock.lock_run(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run_dir / runlock.LOCK).read_text().strip() == str(proc.pid)  # the file stays...
    assert runlock.holder(run_dir) is None  # ...but the lock died with the process
    lock = runlock.lock_run(run_dir)
    assert runlock.holder(run_dir) == os.getpid()
    runlock.release(lock)
    assert runlock.holder(run_dir) is None


@pytest.mark.slow
def test_resume_and_a_second_out_of_a_live_run_are_refused_naming_the_process(
    tmp_path, cli, config_file, data_root, holder_process
):
    with pytest.raises(Interrupted):
        fit(cnnzoo.load_config(config_file), out=tmp_path / "run", data_root=str(data_root),
            show_progress=False, callbacks=[], stop_after_steps=2)
    proc = holder_process(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    for args in (["--resume", tmp_path / "run"],
                 ["-c", config_file, "--out", tmp_path / "run"]):
        result = cli("train", *args, "--data-root", data_root, "-q")
        assert result.code == USER_ERROR, result.err
        assert f"process {proc.pid} is training into it" in result.err
        assert "Traceback" not in result.err
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert after == before
    with pytest.raises(runlock.RunBusy, match=str(proc.pid)):
        runlock.refuse_live(tmp_path / "run", "initialise from")  # --init-from, tune trials
    proc.kill()
    proc.wait()
    result = cli("train", "--resume", tmp_path / "run", "--data-root", data_root, "-q")
    assert result.code == 0, result.err


class HolderSeen(Callback):
    def __init__(self) -> None:
        self.holders: list[int | None] = []

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        self.holders.append(runlock.holder(ctx.run_dir))


def test_training_holds_the_lock_while_it_runs_and_releases_it(tmp_path, config_file,
                                                               data_root):
    seen = HolderSeen()
    out = tmp_path / "run"
    fit(cnnzoo.load_config(config_file), out=out, data_root=str(data_root),
        show_progress=False, callbacks=[seen])
    assert seen.holders == [os.getpid(), os.getpid()]
    assert runlock.holder(out) is None


def test_a_failed_start_leaves_no_directory_and_no_lock(tmp_path, config_file, data_root):
    out = tmp_path / "run"
    bad = cnnzoo.load_config(config_file, ["model.layers.2.fc.units=7"])  # 10 classes
    with pytest.raises(CnnzooError):
        fit(bad, out=out, data_root=str(data_root), show_progress=False, callbacks=[])
    assert not out.exists()


@pytest.mark.slow  # two real training processes
def test_two_trainings_started_together_into_one_out_do_not_mix(tmp_path, config_file,
                                                                  data_root):
    out = tmp_path / "run"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "train", "-c", str(config_file), "--data-root",
         str(data_root), "-o", str(out), "-q", "--set", f"train.seed={seed}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"}) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, USER_ERROR], results
    loser = next(err for code, err in results if code == USER_ERROR)
    assert "training into it" in loser or "already holds a run" in loser
    assert "Traceback" not in loser
    with open(out / rundir.METRICS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "train"), ("2", "train"),
                                                        ("2", "test")]
    winner_seed = 1 if results[0][0] == 0 else 2
    assert cnnzoo.load_config(out / rundir.CONFIG).train.seed == winner_seed
    assert json.loads((out / rundir.RESULTS).read_text())["epochs"] == 2
