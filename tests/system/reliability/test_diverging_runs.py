"""6. Divergence: a NaN or infinite loss stops at the step it happens and keeps the last
good checkpoint, also when losses are read a step late."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.runs.checkpoint import load_state
from cnnzoo.training.callbacks import Callback
from cnnzoo.training.progress import StepLosses
from cnnzoo.training.stopping import Diverged, Interrupted
from cnnzoo.training.trainer import fit
from tests.system.reliability.common import (
    STEPS_PER_EPOCH,
    USER_ERROR,
    assert_same_training,
    assert_same_weights,
    step_rows,
    train,
    weights_of,
)


def test_a_diverging_loss_stops_at_the_step_it_happens(tmp_path, cli, config_file, data_root):
    out = tmp_path / "run"
    result = cli("train", "-c", config_file, "--data-root", data_root, "-o", out,
                 "--set", "train.optimizer.lr=1.0e6")
    assert result.code == USER_ERROR
    err = result.err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the learning rate is likely too high (train.optimizer.lr: 1e+06)" in err
    assert f"No checkpoint had been written to {out} yet" in err
    step = int(err.split("(global step ")[1].split(")")[0])
    assert not (out / "model.safetensors").exists() and not (out / "state.pt").exists()
    # Independently: the same run stopped one step earlier had only finite losses and
    # weights, so training stopped at the very step the loss went bad.
    assert step > 1  # lr 1e6 takes a few steps to overflow
    config = cnnzoo.load_config(config_file, ["train.optimizer.lr=1.0e6"])
    with pytest.raises(Interrupted):
        train(config, data_root, out=tmp_path / "before", stop_after_steps=step - 1)
    losses = torch.tensor([float(r["loss"]) for r in step_rows(tmp_path / "before")])
    assert len(losses) == step - 1 and torch.isfinite(losses).all()
    assert all(torch.isfinite(t).all() for t in weights_of(tmp_path / "before").values())


class InfiniteFrom(Callback):
    """From the end of epoch `epoch` on, the network's output is multiplied by inf: the
    loss of the next step is not finite (as after an exploding update)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            model.register_forward_hook(lambda module, args, output: output * float("inf"))


class NanWeightsAt(Callback):
    """At the end of epoch `epoch`, a weight becomes NaN, as after an update that
    overflowed while the loss was still finite."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("cause", ["nan_loss", "nan_weights"])
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, config_file, data_root,
                                                   interrupted, cause):
    out = tmp_path / "run"
    good = interrupted(STEPS_PER_EPOCH)  # what the first epoch's checkpoint must hold
    callback = InfiniteFrom(0) if cause == "nan_loss" else NanWeightsAt(1)
    with pytest.raises(Diverged) as diverged:
        train(cnnzoo.load_config(config_file), data_root, out=out, callbacks=[callback])
    message = str(diverged.value)
    if cause == "nan_loss":
        assert "the loss became" in message
        assert f"epoch 2, step 1 (global step {STEPS_PER_EPOCH + 1})" in message
    else:
        assert f"by global step {2 * STEPS_PER_EPOCH}" in message and "layers." in message
    assert f"The last good checkpoint in {out} was kept" in message
    weights = weights_of(out)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert_same_weights(out, good)
    assert load_state(out / "state.pt")["step"] == STEPS_PER_EPOCH


@pytest.fixture
def lagged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Losses read one step late, as on CUDA (where reading at once would stall the
    GPU), here on the CPU."""
    original = StepLosses.__init__

    def init(self, device, on_value, lag=None):
        original(self, device, on_value, lag=1)

    monkeypatch.setattr(StepLosses, "__init__", init)


def test_reading_losses_a_step_late_changes_nothing_but_when(tmp_path, config_file, data_root,
                                                             straight, lagged):
    """Straight and interrupted-and-resumed runs with lagged reading are bitwise the
    unlagged straight run: every loss reaches the log, the checkpoint and the tally."""
    config = cnnzoo.load_config(config_file)
    run = train(config, data_root, out=tmp_path / "lagged")
    assert_same_training(run, straight)
    with pytest.raises(Interrupted):
        train(config, data_root, out=tmp_path / "stopped", stop_after_steps=13)
    assert len(step_rows(tmp_path / "stopped")) == 13
    fit(config, resume=tmp_path / "stopped", data_root=str(data_root), show_progress=False,
        callbacks=[])
    assert_same_training(tmp_path / "stopped", straight)


def test_a_late_read_nan_loss_names_its_own_step_and_keeps_the_checkpoint(
        tmp_path, config_file, data_root, interrupted, lagged):
    out = tmp_path / "run"
    good = interrupted(STEPS_PER_EPOCH)
    with pytest.raises(Diverged) as diverged:
        train(cnnzoo.load_config(config_file), data_root, out=out, callbacks=[InfiniteFrom(0)])
    # Read one step late, but named as the step whose loss it was.
    assert f"epoch 2, step 1 (global step {STEPS_PER_EPOCH + 1})" in str(diverged.value)
    assert_same_weights(out, good)
    assert load_state(out / "state.pt")["step"] == STEPS_PER_EPOCH


def test_step_losses_reads_in_order_and_flushes():
    seen = []
    losses = StepLosses(torch.device("cpu"), lambda value, info: seen.append((value, info)),
                        lag=1)
    losses.add(torch.tensor(1.0), "a")
    assert seen == []  # not read yet: the next step reads it
    losses.add(torch.tensor(2.0), "b")
    assert seen == [(1.0, "a")]
    losses.flush()
    assert seen == [(1.0, "a"), (2.0, "b")]
    immediate = StepLosses(torch.device("cpu"), lambda value, info: seen.append((value, info)))
    immediate.add(torch.tensor(3.0), "c")
    assert seen[-1] == (3.0, "c")
