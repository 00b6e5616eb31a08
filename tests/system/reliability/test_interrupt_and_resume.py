"""3. and 4. Interrupts and exact resume: a signal stops a real training process with a
checkpoint, and an interrupted and resumed run equals one trained straight through."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.runs.checkpoint import load_state
from cnnzoo.training.callbacks import Callback
from cnnzoo.training.stopping import Interrupted
from tests.helpers.common import ROOT
from tests.system.reliability.common import (
    ONE_THREAD,
    STEPS_PER_EPOCH,
    TOTAL_STEPS,
    USER_ERROR,
    assert_same_training,
    snapshot,
    step_rows,
    train,
)


def _start_training(config_file: Path, data_root: Path, out: Path, log: Path):
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "cnnzoo", "train", "-c", str(config_file), "--data-root",
             str(data_root), "-o", str(out)],
            stdout=handle, stderr=subprocess.STDOUT, env=ONE_THREAD, cwd=ROOT,
        )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [pytest.param(signal.SIGINT, 130, id="SIGINT"),
                                          pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_a_signal_stops_training_with_a_checkpoint_and_resume_finishes_it(
    tmp_path, cli, config_file, data_root, straight, sig, code
):
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    proc = _start_training(config_file, data_root, out, log)
    try:
        _wait_for(out / "steps.csv", proc)  # written at the end of the first epoch
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert "Traceback" not in output
    resume = f"cnnzoo train --resume {out} --data-root {data_root}"
    assert f"Resume with: {resume}\n" in output, output
    state = load_state(out / "state.pt")  # a loadable checkpoint, at a step boundary
    stopped_at = state["step"]
    assert STEPS_PER_EPOCH <= stopped_at < TOTAL_STEPS
    assert [int(r["step"]) for r in step_rows(out)] == list(range(1, stopped_at + 1))

    result = cli(*resume.split()[1:])  # the command it printed, as printed
    assert result.code == 0, result.err
    rows = step_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, TOTAL_STEPS + 1))  # none twice
    assert [(int(r["epoch"]), int(r["batch"])) for r in rows] == [
        (e, b) for e in range(1, 4) for b in range(1, STEPS_PER_EPOCH + 1)]
    assert_same_training(out, straight)


class SignalAtEpochEnd(Callback):
    """Sends the process a signal at the end of one epoch, as a user might."""

    def __init__(self, epoch: int, sig: int) -> None:
        self.epoch, self.sig = epoch, sig

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            signal.raise_signal(self.sig)


@pytest.mark.parametrize("stop", ["mid_epoch", "last_step_of_epoch", "signal_at_epoch_end"])
def test_interrupted_and_resumed_equals_straight(tmp_path, config_file, data_root, straight,
                                                 stop):
    config = cnnzoo.load_config(config_file)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as stopped:
        if stop == "signal_at_epoch_end":
            train(config, data_root, out=out, callbacks=[SignalAtEpochEnd(0, signal.SIGTERM)])
        else:
            n = 13 if stop == "mid_epoch" else STEPS_PER_EPOCH
            train(config, data_root, out=out, stop_after_steps=n)
    expected_step = 13 if stop == "mid_epoch" else STEPS_PER_EPOCH
    assert load_state(out / "state.pt")["step"] == expected_step
    assert stopped.value.exit_code == (143 if stop == "signal_at_epoch_end" else 130)
    train(cnnzoo.load_config(out / "config.yaml"), data_root, resume=out)
    assert_same_training(out, straight)


def test_resume_with_a_changed_seed_batch_size_and_model_names_them_all(cli, interrupted,
                                                                        data_root):
    run = interrupted(13)
    before = snapshot(run)
    result = cli("train", "--resume", run, "--data-root", data_root, "--set", "train.seed=1",
                 "--set", "train.batch_size=12", "--set", "model.layers.0.conv.filters=8")
    assert result.code == USER_ERROR
    for key in ("train.seed (0 -> 1)", "train.batch_size (24 -> 12)", "model.layers"):
        assert key in result.err, result.err
    assert snapshot(run) == before
