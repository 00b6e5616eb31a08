"""Mixup and CutMix: the mixed images and the mixed loss against their formulas."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.data.mix import mix_batch
from cnnzoo.training.losses import create_loss
from cnnzoo.training.step import TrainStep
from cnnzoo.training.trainer import fit
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist


def constant_images(n: int = 8, h: int = 12, w: int = 10) -> torch.Tensor:
    """Image i is filled with the value i + 1, so every pixel says whose it is."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, 2, h, w).clone()


def test_off_is_no_mix():
    assert mix_batch(torch.zeros(4, 1, 5, 5), 0.0, 0.0, seed=1) is None


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mixup_blends_each_image_with_its_partner(seed):
    x = torch.randn(8, 3, 6, 5)
    mix = mix_batch(x, 0.4, 0.0, seed)
    assert 0.0 <= mix.lam <= 1.0
    assert sorted(mix.partner.tolist()) == list(range(8))  # a permutation of the batch
    expected = mix.lam * x + (1 - mix.lam) * x[mix.partner]
    torch.testing.assert_close(mix.images, expected)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_pastes_a_box_whose_area_is_one_minus_lam(seed):
    x = constant_images()
    mix = mix_batch(x, 0.0, 1.0, seed)
    for i, j in enumerate(mix.partner.tolist()):
        own = mix.images[i] == i + 1
        theirs = mix.images[i] == j + 1
        assert bool((own | theirs).all())  # every pixel comes from one of the two
        if i != j:
            assert own.float().mean().item() == pytest.approx(mix.lam)  # lam: the share left
            rows = theirs[0].any(1).nonzero().flatten()
            cols = theirs[0].any(0).nonzero().flatten()
            if len(rows):  # the pasted pixels form one rectangle
                box = theirs[0][rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
                assert bool(box.all()) and int(theirs[0].sum()) == box.numel()


def test_both_on_uses_each_kind_and_the_same_seed_mixes_the_same():
    x = constant_images()
    kinds = set()
    for seed in range(40):
        mix = mix_batch(x, 0.4, 1.0, seed)
        again = mix_batch(x, 0.4, 1.0, seed)
        assert torch.equal(mix.images, again.images) and mix.lam == again.lam
        whole = {float(v) for v in mix.images[0].unique()}
        kinds.add("cutmix" if whole <= {float(v) for v in range(1, 9)} else "mixup")
    assert kinds == {"cutmix", "mixup"}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_mixed_loss_is_cross_entropy_against_mixed_targets(smoothing):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    net.auxiliary_loss = lambda x: 0.0
    loss_config = cnnzoo.config.experiment.LossConfig(label_smoothing=smoothing)
    step = TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.1),
                     create_loss(loss_config).fn, torch.device("cpu"), "fp32")
    x, labels = torch.randn(6, 1, 3, 4), torch.randint(0, 5, (6,))
    mix = mix_batch(x, 0.4, 0.0, seed=5)
    logits = net(mix.images)
    got = step.loss(mix.images, logits, labels, mix)
    targets = (mix.lam * F.one_hot(labels, 5).float()
               + (1 - mix.lam) * F.one_hot(labels[mix.partner], 5).float())
    targets = targets * (1 - smoothing) + smoothing / 5  # label smoothing, by its formula
    expected = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("key", ["mixup", "cutmix"])
def test_a_negative_alpha_is_a_config_error(tmp_path, cli, key):
    config = write(tmp_path / "net.yaml", "model:\n  layers:\n    - input: {width: 8, height: 8,"
                   " depth: 1}\n    - fc: 10\n")
    result = cli("summary", "--config", config, "--set", f"data.augment.{key}=-1")
    assert result.code == 2
    assert f"data.augment.{key}" in result.err and "Traceback" not in result.err


@pytest.mark.slow
def test_a_run_with_mixup_and_cutmix_trains_and_resumes_exactly(tmp_path):
    write_mnist(tmp_path / "data", n_train=240, n_test=40)
    config = cnnzoo.load_config(write(tmp_path / "net.yaml", """
model:
  layers:
    - input: {width: 28, height: 28, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: same, activation: relu}
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, augment: {mixup: 0.4, cutmix: 1.0}}
train: {epochs: 2, batch_size: 24}
"""))
    from cnnzoo.training.stopping import Interrupted

    data = str(tmp_path / "data")
    straight = fit(config, out=tmp_path / "a", data_root=data, show_progress=False,
                   callbacks=[]).run_dir
    with pytest.raises(Interrupted):
        fit(config, out=tmp_path / "b", data_root=data, show_progress=False, callbacks=[],
            stop_after_steps=11)
    resumed = fit(config, resume=tmp_path / "b", data_root=data, show_progress=False,
                  callbacks=[]).run_dir
    assert (straight / "steps.csv").read_text() == (resumed / "steps.csv").read_text()
    results = [json.loads((r / "results.json").read_text()) for r in (straight, resumed)]
    assert results[0]["test_loss"] == results[1]["test_loss"]
