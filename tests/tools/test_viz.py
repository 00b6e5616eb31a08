"""`cnnzoo viz` end to end on a run trained on fake files, and the activation volumes
it draws against convolutions computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo.tools.viz import activation_volumes
from tests.helpers.runs import SMALL, assert_png, image_file


def test_viz_one_picture(trained, cli, tmp_path):
    out = tmp_path / "volumes.png"
    result = cli("viz", trained["small"], "--image", image_file(tmp_path), "--out", out)
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    assert_png(out, (1080, 380))  # input, conv and pool panels in one row


def test_viz_one_picture_per_layer(trained, cli, tmp_path):
    out = tmp_path / "volumes"
    result = cli("viz", trained["small"], "--image", image_file(tmp_path), "-o", out)
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["00-input.png", "01-conv-1.png",
                                                     "02-pool-3.png"]
    for path in out.iterdir():
        assert_png(path)


def test_viz_default_output_is_in_the_run(trained, cli, tmp_path):
    result = cli("viz", trained["small"], "-i", image_file(tmp_path, 3))
    assert result.code == 0, result.err
    assert_png(trained["small"] / "activations-item3.png")


@pytest.mark.parametrize(("run", "image", "out", "message"), [
    ("small", "missing.png", None, "no image file"),
    ("small", None, "volumes.txt", "give a .png file or a directory"),
    ("dense", None, None, "has no conv, local or pool layer"),
    ("data", None, None, "is not a cnnzoo run"),
])
def test_viz_errors(trained, cli, tmp_path, run, image, out, message):
    args = ["viz", trained[run], "--image", tmp_path / image if image else image_file(tmp_path)]
    if out:
        args += ["--out", tmp_path / out]
    result = cli(*args)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_activation_volumes_are_the_layers_outputs():
    plan = cnnzoo.plan_experiment(cnnzoo.parse_config(SMALL))
    model = cnnzoo.build_model(plan).eval()
    x = torch.randn(1, 1, 28, 28)
    volumes = activation_volumes(model, x)
    conv = model.layers[1]
    expected_conv = F.conv2d(x, conv.weight, conv.bias, padding=1)[0]
    expected_pool = F.max_pool2d(F.relu(expected_conv), 4)
    assert [p.index for p, _ in volumes] == ["1", "3"]
    np.testing.assert_allclose(volumes[0][1].values, expected_conv.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(volumes[1][1].values, expected_pool.detach().numpy(), atol=1e-6)
    assert volumes[1][1].title == "3 pool max 4x4/4\n7x7x8"


def test_activation_volumes_reach_into_residual_and_repeat():
    plan = cnnzoo.plan_experiment(cnnzoo.load_config("resnet-small"))
    model = cnnzoo.build_model(plan)
    volumes = activation_volumes(model, torch.randn(1, 1, 28, 28))
    expected = [p for p in plan.walk() if p.type_name in ("conv", "pool")]
    assert [p.index for p, _ in volumes] == [p.index for p in expected]
    assert len(expected) == 10  # stem, 2 per block x 4 blocks, 1 shortcut; no pools
    for layer, volume in volumes:
        assert volume.values.shape == layer.output.torch_shape()
    assert model.training  # put back as it was
