"""A run with a whitening conv: its filters computed once from the training images when
the run starts, frozen, stored with the run's weights (eval repeats the run's accuracy),
kept across a resume bitwise, and left to --init-from where that loads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.layers.whitening import whitening_weights
from cnnzoo.model.build import build_network
from cnnzoo.runs.checkpoint import load_state, load_weights, save_weights
from cnnzoo.runs.packed import stored_tensors
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import Trainer, fit
from tests.helpers.common import write
from tests.helpers.datafiles import class_images, write_mnist

TRAIN_IMAGES = 240
TINY = """
model:
  layers:
    - input: {width: 28, height: 28, depth: 1}
    - conv: {filters: 6, kernel: 2, init: whitening}
    - relu
    - conv: {filters: 8, kernel: 3, padding: same, init: dirac}
    - batchnorm
    - relu
    - pool: 9
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0, augment: {flip: true}}
train:
  epochs: 2
  batch_size: 24
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A straight run, and the same run interrupted mid-epoch 2 and resumed."""
    work = tmp_path_factory.mktemp("whiten")
    write_mnist(work / "data", n_train=TRAIN_IMAGES, n_test=40)
    config = cnnzoo.load_config(write(work / "tiny.yaml", TINY))
    data = str(work / "data")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(config, out=work / "straight", data_root=data, show_progress=False, callbacks=[])
        with pytest.raises(Interrupted):
            fit(config, out=work / "resumed", data_root=data, show_progress=False,
                callbacks=[], stop_after_steps=13)  # 10 steps an epoch
        fit(config, resume=work / "resumed", data_root=data, show_progress=False, callbacks=[])
    finally:
        torch.set_num_threads(before)
    return {"straight": work / "straight", "resumed": work / "resumed", "data": work / "data",
            "config": work / "tiny.yaml"}


def expected_filters(run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The whitening of the run's sample, rebuilt apart from the run: every training image
    (fewer than the sample's 5,000, and no val split) as the fake files hold them,
    normalised with the run's recorded mean and std."""
    info = json.loads((run / "run.json").read_text())
    pixels = class_images(np.arange(TRAIN_IMAGES) % 10, 28, 1, 0)[..., 0]  # write_mnist's
    images = (pixels[:, None] / 255.0 - info["mean"][0]) / info["std"][0]
    return whitening_weights(torch.tensor(images, dtype=torch.float32), 6, (2, 2))


def test_the_run_holds_the_whitening_of_its_sample_unchanged_by_training(runs):
    weight, bias = expected_filters(runs["straight"])
    stored, _ = load_weights(runs["straight"] / "model.safetensors")
    torch.testing.assert_close(stored["layers.1.weight"], weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stored["layers.1.bias"], bias, rtol=1e-5, atol=1e-5)
    # frozen, yet no tensor that the config rebuilds: a packed file keeps them too
    network = build_network(cnnzoo.load_config(runs["config"]))
    network.load_state_dict(stored)
    assert {"layers.1.weight", "layers.1.bias"} <= set(stored_tensors(network))


def test_eval_of_the_run_repeats_its_test_accuracy(runs, cli):
    """The filters reload exactly: eval builds the network (with PyTorch's default in
    the whitening conv) and loads the run's weights over it."""
    result = cli("eval", runs["straight"], "--data-root", runs["data"], "--json")
    assert result.code == 0, result.err
    recorded = json.loads((runs["straight"] / "results.json").read_text())
    assert json.loads(result.out)["loss"] == recorded["test_loss"]


def test_interrupted_and_resumed_equals_straight(runs):
    a, _ = load_weights(runs["straight"] / "model.safetensors")
    b, _ = load_weights(runs["resumed"] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [(runs[r] / "steps.csv").read_text() for r in ("straight", "resumed")]
    assert steps[0] == steps[1]


def set_up(runs: dict[str, Path], out: Path, *overrides: str, init_from: str | None = None
           ) -> Trainer:
    """A fresh run of the tiny config, up to its first step."""
    config = cnnzoo.load_config(runs["config"], list(overrides))
    trainer = Trainer(config, out=out, data_root=str(runs["data"]), show_progress=False,
                      callbacks=[], init_from=init_from)
    trainer.open_run()
    trainer.set_up()
    return trainer


def test_whitening_is_frozen_by_default_and_learns_with_trainable(runs, tmp_path):
    weight, _ = expected_filters(runs["straight"])
    for trainable, out in ((None, tmp_path / "frozen"), (True, tmp_path / "learns")):
        overrides = [] if trainable is None else ["model.layers.1.conv.trainable=true"]
        trainer = set_up(runs, out, *overrides)
        conv = trainer.model.layers[1]
        torch.testing.assert_close(conv.weight.detach(), weight, rtol=1e-5, atol=1e-6)
        optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        assert conv.weight.requires_grad is bool(trainable)
        assert (id(conv.weight) in optimized) is bool(trainable)


def test_init_from_keeps_the_filters_it_loads(runs, tmp_path):
    config = cnnzoo.load_config(runs["config"])
    source = build_network(config)
    source.load_state_dict(load_weights(runs["straight"] / "model.safetensors")[0])
    with torch.no_grad():
        source.layers[1].weight.mul_(3.0)  # not what the images would give
    save_weights(source, tmp_path / "source.safetensors")
    with pytest.raises(Interrupted):
        fit(config, out=tmp_path / "run", data_root=str(runs["data"]), show_progress=False,
            callbacks=[], init_from=str(tmp_path / "source.safetensors"), stop_after_steps=1)
    state = load_state(tmp_path / "run" / "state.pt")["model"]
    assert torch.equal(state["layers.1.weight"], source.layers[1].weight)
