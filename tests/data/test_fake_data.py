"""`data: {dataset: fake}` takes any input shape and any number of classes."""

from __future__ import annotations

import json

import pytest
import torch

import cnnzoo
from cnnzoo.data.fake import fake_images
from cnnzoo.layers.shapes import Volume
from cnnzoo.training.trainer import fit
from tests.helpers.common import write

NET = """
model:
  layers:
    - input: {{width: {width}, height: {height}, depth: {depth}}}
    - conv: {{filters: 4, kernel: 3, padding: same, activation: relu}}
    - fc: {classes}
data: {{dataset: fake, limit_train: 64, limit_test: 24}}
train: {{epochs: 1, batch_size: 16}}
"""


@pytest.mark.parametrize(("size", "volume", "classes"), [
    (10, Volume(16, 12, 8), 13),
    (7, Volume(5, 9, 1), 2),
    (3, Volume(4, 4, 64), 1000),
])
def test_fake_images_have_the_shape_and_labels_asked_for(size, volume, classes):
    images, labels = fake_images(size, volume, classes, seed=0)
    assert images.shape == (size, volume.depth, volume.height, volume.width)  # (N, D, H, W)
    assert images.dtype == torch.uint8 and labels.shape == (size,)
    assert int(labels.min()) >= 0 and int(labels.max()) < classes
    again = fake_images(size, volume, classes, seed=0)
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1])
    assert not torch.equal(images, fake_images(size, volume, classes, seed=1)[0])


def test_fake_images_cover_the_pixel_range():
    images, labels = fake_images(2000, Volume(8, 8, 3), 10, seed=0)
    assert int(images.min()) == 0 and int(images.max()) == 255
    assert torch.bincount(labels, minlength=10).min() > 100  # every class, about 200 each


@pytest.mark.parametrize(("width", "height", "depth", "classes"), [
    (16, 16, 8, 10),  # more channels than an image file holds
    (9, 7, 2, 37),
    (12, 12, 1, 2),
])
def test_a_fake_run_trains_any_input_shape_and_number_of_classes(tmp_path, width, height,
                                                                depth, classes):
    path = write(tmp_path / "net.yaml", NET.format(width=width, height=height, depth=depth,
                                                   classes=classes))
    run = fit(cnnzoo.load_config(path), out=tmp_path / "run", show_progress=False,
              callbacks=[]).run_dir
    results = json.loads((run / "results.json").read_text())
    assert results["test_samples"] == 24
    assert json.loads((run / "run.json").read_text())["classes"] == [
        f"class{i}" for i in range(classes)]


def test_a_fake_run_with_eight_channels_through_the_cli(tmp_path, cli):
    path = write(tmp_path / "net.yaml", NET.format(width=16, height=16, depth=8, classes=10))
    result = cli("train", "-c", path, "-o", tmp_path / "run", "-q")
    assert result.code == 0, result.err
    assert (tmp_path / "run" / "results.json").exists()
