"""A loss that blows up but stays finite stops the run like a NaN loss: the rule in
cnnzoo.training.stopping, the message, the checkpoint kept, exit code 2, and the switch."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.config.experiment import DivergenceConfig
from cnnzoo.runs.checkpoint import load_state, load_weights
from cnnzoo.training import trainer
from cnnzoo.training.callbacks import Callback
from cnnzoo.training.stopping import Diverged, DivergenceGuard, Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import write

# A small batchnorm CNN: batchnorm keeps the activations finite while lr 1e6 throws the
# weights about, so the loss climbs to ~1e6 and stays finite for many steps.
BATCHNORM = """
model:
  layers:
    - input: {width: 12, height: 12, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: same}
    - batchnorm
    - relu
    - pool: 2
    - fc: 10
data: {dataset: fake, limit_train: 480, limit_test: 40, val_split: 0}
train: {epochs: 2, batch_size: 16}
"""
STEPS_PER_EPOCH = 30  # 480 / 16
LIMIT = 10 * math.log(10)  # the default: 10 x the loss of a uniform guess over 10 classes


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "default_callbacks", lambda: [])


def step_losses(run: Path) -> list[float]:
    with open(run / "steps.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def first_streak_end(losses: list[float], limit: float, steps: int) -> int | None:
    """The 1-based step at which `steps` consecutive losses above `limit` end, computed
    straight from the definition, independently of DivergenceGuard's counter."""
    for end in range(steps, len(losses) + 1):
        if all(loss > limit for loss in losses[end - steps:end]):
            return end
    return None


@pytest.mark.parametrize(("losses", "factor", "steps", "classes", "stops_at"), [
    ([2.3] * 50, 10.0, 20, 10, None),  # training as usual
    ([2.3] + [24.0] * 20, 10.0, 20, 10, 21),  # 10 ln 10 = 23.03
    ([2.3] + [23.0] * 30, 10.0, 20, 10, None),  # at the limit is not above it
    ([30.0] * 19 + [2.0] + [30.0] * 19, 10.0, 20, 10, None),  # one good step resets
    ([1e15] * 3, 10.0, 3, 10, 3),
    ([5.0] * 5, 2.0, 5, 2, 5),  # 2 ln 2 = 1.39
    ([5.0] * 5, 2.0, 5, 3, 5),  # 2 ln 3 = 2.20
    ([3.0] * 10, 3.0, 5, 3, None),  # 3 ln 3 = 3.30
    ([1e30] * 40, 10.0, 20, 1, None),  # one class: no uniform guess to compare with
])
def test_the_rule_counts_consecutive_steps_above_factor_times_ln_classes(
        losses, factor, steps, classes, stops_at):
    guard = DivergenceGuard(DivergenceConfig(factor=factor, steps=steps), classes)
    stopped = next((i + 1 for i, loss in enumerate(losses) if guard.diverged(loss)), None)
    limit = factor * math.log(classes) if classes > 1 else math.inf
    assert stopped == first_streak_end(losses, limit, steps) == stops_at


def test_switched_off_the_rule_never_stops():
    guard = DivergenceGuard(DivergenceConfig(enabled=False), 10)
    assert not any(guard.diverged(1e30) for _ in range(1000))


def test_a_finite_blow_up_stops_the_run_with_exit_code_2(tmp_path, cli):
    config = write(tmp_path / "bn.yaml", BATCHNORM)
    out = tmp_path / "run"
    result = cli("train", "-c", config, "-o", out, "-q", "--set", "train.optimizer.lr=1000000")
    assert result.code == 2
    err = result.err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("error: ")
    assert f"the loss stayed above {LIMIT:.3g} (10 x ln 10, the loss of a uniform guess)" in err
    assert "the learning rate is likely too high (train.optimizer.lr: 1e+06)" in err
    assert f"No checkpoint had been written to {out} yet" in err
    assert "--set train.divergence.enabled=false" in err
    assert not (out / "model.safetensors").exists() and not (out / "state.pt").exists()
    stopped = int(err.split("(global step ")[1].split(")")[0])

    # Independently: the same run with the rule off goes on past that step (until it is
    # stopped one step later, or its batchnorm statistics overflow and the checkpoint
    # refuses them); its losses are finite, and the step the rule stopped at is where 20
    # consecutive losses above the limit first end.
    off = cnnzoo.load_config(config, ["train.optimizer.lr=1000000",
                                      "train.divergence.enabled=false"])
    with pytest.raises((Interrupted, Diverged)) as ended:
        fit(off, out=tmp_path / "off", stop_after_steps=stopped + 1, show_progress=False,
            callbacks=[])
    assert "the loss stayed above" not in str(ended.value)
    losses = step_losses(tmp_path / "off")
    assert len(losses) == stopped + 1 and all(math.isfinite(v) for v in losses)
    assert first_streak_end(losses, LIMIT, 20) == stopped
    assert max(losses) > 1e3 * LIMIT


class ScaledOutputFrom(Callback):
    """From the end of epoch `epoch` on, the network's output is multiplied by 1e4: a
    finite loss far above the limit, as after an update that blew up the last layer."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            model.register_forward_hook(lambda module, args, output: output * 1e4)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    config = cnnzoo.parse_config(BATCHNORM, ["train.optimizer.lr=0.05",
                                             "train.divergence.steps=3"])
    out = tmp_path / "run"
    with pytest.raises(Diverged) as diverged:
        fit(config, out=out, show_progress=False, callbacks=[ScaledOutputFrom(0)])
    message = str(diverged.value)
    assert "for 3 steps" in message
    assert f"epoch 2, step 3 (global step {STEPS_PER_EPOCH + 3})" in message
    assert f"The last good checkpoint in {out} was kept" in message
    assert load_state(out / "state.pt")["position"]["step"] == STEPS_PER_EPOCH
    # The checkpoint is the first epoch's: the same run stopped there holds the same weights.
    with pytest.raises(Interrupted):
        fit(config, out=tmp_path / "first", stop_after_steps=STEPS_PER_EPOCH,
            show_progress=False, callbacks=[])
    kept, expected = load_weights(out / "model.safetensors")[0], load_weights(
        tmp_path / "first" / "model.safetensors")[0]
    assert all(torch.equal(kept[name], expected[name]) for name in expected)


@pytest.mark.parametrize(("override", "expected"), [
    ("train.divergence.factor=0.5", "factor must be >= 1.0. Received: factor=0.5"),
    ("train.divergence.steps=0", "steps must be positive. Received: steps=0"),
    ("train.divergence.enabled=maybe", "enabled must be true or false"),
    ("train.divergence.patience=3", "'patience' is not"),
])
def test_bad_divergence_settings_are_refused(tmp_path, cli, override, expected):
    config = write(tmp_path / "bn.yaml", BATCHNORM)
    result = cli("train", "-c", config, "-o", tmp_path / "run", "--set", override)
    assert result.code == 2
    assert expected in result.err and result.err.count("\n") == 1, result.err
    assert not (tmp_path / "run").exists()
