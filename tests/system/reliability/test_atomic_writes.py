"""5. Atomic writes: a kill or a full disk in the middle of a save leaves the previous
checkpoint, and a run killed while saving resumes to the same result."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.runs.checkpoint import load_state, load_weights, save_weights
from cnnzoo.training.callbacks import Callback
from cnnzoo.utils.files import atomic_write_with
from tests.system.reliability.common import (
    STEPS_PER_EPOCH,
    assert_same_training,
    assert_same_weights,
    temp_files,
    train,
)


def _kill_while_writing(path: Path, data: bytes, written: int) -> None:
    """Fork a child that writes `data` to `path` atomically but stops after `written`
    bytes (before the rename), and SIGKILL it there."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            def stall(handle):
                handle.write(data[:written])
                handle.flush()
                os.write(ready_w, b"x")
                time.sleep(60)
                handle.write(data[written:])

            atomic_write_with(path, stall)
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("written", ["half", "all_but_the_rename"])
def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_checkpoint(tmp_path, written):
    old_model, new_model = torch.nn.Linear(30, 20), torch.nn.Linear(30, 20)
    path = tmp_path / "model.safetensors"
    save_weights(old_model, path)
    old = path.read_bytes()
    new = cnnzoo.runs.checkpoint.weights_bytes(new_model)
    _kill_while_writing(path, new, len(new) // 2 if written == "half" else len(new))

    assert path.read_bytes() == old  # intact, and loadable
    assert torch.equal(load_weights(path)[0]["weight"], old_model.weight.detach())
    leftovers = temp_files(tmp_path)
    assert [p.name.startswith(".model.safetensors.") for p in leftovers] == [True]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "model.safetensors"]  # no partial file under any name a loader reads
    # The next save replaces the checkpoint and leaves the other write's file alone.
    save_weights(new_model, path)
    assert torch.equal(load_weights(path)[0]["weight"], new_model.weight.detach())
    assert temp_files(tmp_path) == leftovers


def _train_until_killed_in_second_checkpoint(config_file: Path, data_root: Path, out: Path,
                                             where: str) -> None:
    """In a forked child: train, and SIGKILL the process during the second checkpoint
    (writes: weights 1, state 1, weights 2, state 2)."""
    from cnnzoo.utils.files import atomic_open

    calls = []
    write = cnnzoo.runs.checkpoint.atomic_write_bytes

    def dying_write(path, data):
        calls.append(path)
        if len(calls) == 3 and where == "in_weights":
            with atomic_open(path) as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        write(path, data)
        if len(calls) == 3 and where == "between_files":
            os.kill(os.getpid(), signal.SIGKILL)  # the new weights are in place, the state not

    cnnzoo.runs.checkpoint.atomic_write_bytes = dying_write
    train(cnnzoo.load_config(config_file), data_root, out=out)


@pytest.mark.parametrize("where", ["in_weights", "between_files"])
def test_a_training_killed_while_saving_resumes_to_the_same_result(
    tmp_path, cli, config_file, data_root, straight, where
):
    out = tmp_path / "run"
    pid = os.fork()  # one thread (see one_thread), so the child may run torch safely
    if pid == 0:
        try:
            _train_until_killed_in_second_checkpoint(config_file, data_root, out, where)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    state = load_state(out / "state.pt")
    assert state["step"] == STEPS_PER_EPOCH  # the first epoch's checkpoint
    weights_sha = load_weights(out / "model.safetensors")[1]["sha256"]
    if where == "between_files":  # the weights are a checkpoint ahead of the state
        assert weights_sha != state["weights_sha256"]
        assert temp_files(out) == []
    else:
        assert weights_sha == state["weights_sha256"]
        assert len(temp_files(out)) == 1
    result = cli("train", "--resume", out, "--data-root", data_root)
    assert result.code == 0, result.err
    assert_same_training(out, straight)
    assert cli("eval", out, "--data-root", data_root).code == 0


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "model.safetensors"
    old_model = torch.nn.Linear(3, 2)
    save_weights(old_model, path)
    old = path.read_bytes()

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(CnnzooError) as full:
            save_weights(torch.nn.Linear(3, 2), path)
    else:
        def half_then_full(handle):
            handle.write(b"x" * 100)
            no_space()

        with pytest.raises(CnnzooError) as full:
            atomic_write_with(path, half_then_full)
    assert str(full.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == old
    assert temp_files(tmp_path) == []


class FullDiskAfter(Callback):
    """From the end of epoch `epoch` on, every fsync fails as on a full disk."""

    def __init__(self, epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.epoch, self.monkeypatch = epoch, monkeypatch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            def no_space(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self.monkeypatch.setattr(os, "fsync", no_space)


def test_a_full_disk_during_training_keeps_the_last_checkpoint_for_resume(
    tmp_path, monkeypatch, config_file, data_root, straight, interrupted
):
    out = tmp_path / "run"
    with pytest.raises(CnnzooError, match="No space left on device") as full:
        train(cnnzoo.load_config(config_file), data_root, out=out,
              callbacks=[FullDiskAfter(1, monkeypatch)])
    assert str(full.value).startswith(f"cannot write {out / 'model.safetensors'}")
    monkeypatch.undo()  # space freed
    assert temp_files(out) == []
    assert load_state(out / "state.pt")["step"] == STEPS_PER_EPOCH
    assert_same_weights(out, interrupted(STEPS_PER_EPOCH))
    train(cnnzoo.load_config(out / "config.yaml"), data_root, resume=out)
    assert_same_training(out, straight)
