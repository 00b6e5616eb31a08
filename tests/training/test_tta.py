"""train.tta: test-time augmentation, against views made by hand in numpy and a
hand-written average of the network's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.config.experiment import AugmentConfig, parse_config
from cnnzoo.data.augment import BatchTransform
from cnnzoo.errors import ConfigError
from cnnzoo.training.evaluation import evaluate, predict_logits, shift_image
from cnnzoo.zoo.measure import Workload
from tests.training.test_ema import ema_runs  # noqa: F401 (a fixture)

MEAN, STD = (0.2860,), (0.3530,)


def numpy_shift(x: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """x (N, C, H, W) moved by (dy, dx) pixel by pixel: out[i, j] = x[i - dy, j - dx]."""
    h, w = x.shape[-2:]
    out = np.full_like(x, fill)
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[:, :, i, j] = x[:, :, i - dy, j - dx]
    return out


def views_by_hand(x: np.ndarray, tta: str, fill: float) -> list[np.ndarray]:
    views = [x]
    if "shift" in tta:
        views += [numpy_shift(x, dy, dx, fill) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    if "flip" in tta:
        views += [v[..., ::-1].copy() for v in views]
    return views


@pytest.mark.parametrize(("dy", "dx"), [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -3)])
def test_shift_image_matches_numpy(dy, dx):
    x = torch.randn(2, 3, 6, 7)
    fill = torch.tensor([-1.0, 0.5, 2.0]).view(1, 3, 1, 1)
    got = shift_image(x, dy, dx, fill)
    for c in range(3):
        want = numpy_shift(x[:, c:c + 1].numpy(), dy, dx, float(fill[0, c, 0, 0]))
        np.testing.assert_array_equal(got[:, c:c + 1].numpy(), want)


@pytest.mark.parametrize("tta", ["none", "flip", "shift", "flip_shift"])
def test_predict_logits_averages_the_views(tta):
    torch.manual_seed(0)
    # Not flip- or shift-invariant: every view gives different logits.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(3, 1, 8, 8)
    fill = -0.81
    with torch.no_grad():
        got = predict_logits(model, x, tta, fill)
        views = views_by_hand(x.numpy(), tta, fill)
        want = sum(model(torch.from_numpy(v)) for v in views) / len(views)
    assert len(views) == {"none": 1, "flip": 2, "shift": 5, "flip_shift": 10}[tta]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_evaluate_shifts_in_black_pixels():
    """The pixels a shift brings in are black (0 before normalisation), as crop's zero
    padding makes them in training, not 0 after normalisation (the mean's grey)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 4))
    images = torch.randint(0, 256, (6, 1, 5, 5), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    transform = BatchTransform(MEAN, STD, AugmentConfig(), True, torch.device("cpu"))
    got = evaluate(model, iter([(images, labels)]), transform, 4, torch.device("cpu"),
                   tta="flip_shift")
    raw = images.numpy().astype(np.float32)
    with torch.no_grad():
        logits = sum(model(torch.from_numpy((v / 255 - MEAN[0]) / STD[0]).float())
                     for v in views_by_hand(raw, "flip_shift", 0.0)) / 10
    assert got.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert got.accuracy == pytest.approx(float((logits.argmax(1) == labels).float().mean()))


def test_tta_modes_in_the_language_and_the_time_estimate():
    base = "model:\n  layers:\n    - input: {width: 8, height: 8, depth: 1}\n    - fc: 2\n"
    for mode, views in (("none", 1), ("flip", 2), ("shift", 5), ("flip_shift", 10)):
        config = parse_config(base + f"train:\n  tta: {mode}\n")
        assert config.train.tta == mode
        assert Workload.of(config).views == views
    with pytest.raises(ConfigError, match="flip_shift"):
        parse_config(base + "train:\n  tta: shifts\n")


def test_eval_tta_option_averages_ten_views_of_the_test_images(ema_runs, cli):  # noqa: F811
    """`cnnzoo eval --tta flip_shift` against the run's network applied by hand to the
    ten views of each test image, shifted in pixels before normalisation."""
    from cnnzoo.config.datasets import dataset_info
    from cnnzoo.data.sources import load_split
    from cnnzoo.model.devices import autocast
    from cnnzoo.runs import rundir
    from cnnzoo.runs.load import load_run_model, trained_precision

    straight, _, data = ema_runs
    result = cli("eval", straight, "--data-root", data, "--json", "--tta", "flip_shift")
    assert result.code == 0, result.err
    got = json.loads(result.out)

    run = rundir.open_run(straight)
    cpu = torch.device("cpu")
    model = load_run_model(run, cpu)
    test = load_split(dataset_info("fashion_mnist"), "test", [(data, "test")], download=False)
    raw = test.images.numpy().astype(np.float32)
    mean, std = run.info["mean"][0], run.info["std"][0]
    with torch.no_grad(), autocast(cpu, trained_precision(run, cpu)):
        logits = sum(model(torch.from_numpy((v / 255 - mean) / std).float()).float()
                     for v in views_by_hand(raw, "flip_shift", 0.0)) / 10
    loss = float(F.cross_entropy(logits, test.labels))
    assert got["samples"] == len(test.labels) == 40
    # bf16 where the CPU computes it: the same sums in another memory layout and order
    assert got["loss"] == pytest.approx(loss, rel=1e-2)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(1) == test.labels).float()
                                                  .mean()), abs=1 / 40)
    plain = json.loads(cli("eval", straight, "--data-root", data, "--json").out)
    assert plain["loss"] != got["loss"]  # the option changed what was evaluated
