"""Capsule layers, routing, the margin loss and the decoder, each against a second,
independent computation: the paper's formulas written out, and Procedure 1 as a
plain loop over input and output capsules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.config.experiment import LossConfig
from cnnzoo.layers.capsule_modules import Capsules, route, squash
from cnnzoo.training.losses import create_loss

CAPSNET_LAYERS = """
model:
  layers:
    - input: {width: 28, height: 28, depth: 1}
    - conv: {filters: 256, kernel: 9, activation: relu}
    - primary_capsules: {capsules: 32, dim: 8, kernel: 9, stride: 2}
    - capsules: {units: 10, dim: 16, routing: 3}
"""


def _squash_formula(s: np.ndarray) -> np.ndarray:
    """v = |s|^2 / (1 + |s|^2) * s / |s|, one vector at a time."""
    out = np.empty_like(s)
    for index in np.ndindex(s.shape[:-1]):
        vec = s[index]
        norm = math.sqrt(float(vec @ vec))
        out[index] = norm**2 / (1 + norm**2) * vec / norm
    return out


def test_squash_matches_its_formula():
    s = torch.randn(4, 5, 8, dtype=torch.float64) * torch.tensor([0.01, 0.3, 1, 3, 30],
                                                                 dtype=torch.float64)[:, None]
    np.testing.assert_allclose(squash(s).numpy(), _squash_formula(s.numpy()), rtol=1e-6)
    lengths = squash(s).norm(dim=-1)
    assert float(lengths.max()) < 1.0
    assert float(squash(torch.zeros(3, 8)).abs().max()) == 0.0


def _procedure_1(u_hat: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sabour et al. 2017, Procedure 1, written as loops over i (input) and j (output)
    for one image u_hat (N, J, D)."""
    n_in, n_out, _ = u_hat.shape
    b = [[torch.zeros((), dtype=u_hat.dtype) for _ in range(n_out)] for _ in range(n_in)]
    v: list[torch.Tensor] = []
    for r in range(iterations):
        c = []
        for i in range(n_in):
            exps = [torch.exp(b[i][j]) for j in range(n_out)]
            total = sum(exps)
            c.append([e / total for e in exps])
        v = []
        for j in range(n_out):
            s_j = sum(c[i][j] * u_hat[i, j] for i in range(n_in))
            norm2 = (s_j * s_j).sum()
            v.append(norm2 / (1 + norm2) * s_j / torch.sqrt(norm2))
        if r < iterations - 1:
            for i in range(n_in):
                for j in range(n_out):
                    b[i][j] = b[i][j] + (u_hat[i, j] * v[j]).sum()
    return torch.stack(v)


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_routing_matches_procedure_1_values_and_gradients(iterations):
    torch.manual_seed(iterations)
    u_hat = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, 4, dtype=torch.float64)
    fast = route(u_hat, iterations)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), u_hat)
    slow = torch.stack([_procedure_1(u_hat[b], iterations) for b in range(2)])
    (grad_slow,) = torch.autograd.grad((slow * weights).sum(), u_hat)
    torch.testing.assert_close(fast, slow, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(grad_fast, grad_slow, rtol=1e-6, atol=1e-9)


def test_routing_changes_the_coupling():
    """More iterations move v towards the predictions that agree: not a no-op."""
    torch.manual_seed(0)
    u_hat = torch.randn(1, 8, 2, 4, dtype=torch.float64)
    assert not torch.allclose(route(u_hat, 1), route(u_hat, 3))


def test_capsules_layer_predicts_with_one_matrix_per_pair():
    """u_hat_j|i = W_ij u_i with W_ij (D x D_in), then routing: checked with the
    prediction written per pair of capsules."""
    torch.manual_seed(1)
    layer = Capsules(inputs=2 * 3 * 3, in_dim=4, units=5, dim=6, routing=3).double()
    x = torch.randn(2, 2 * 4, 3, 3, dtype=torch.float64)  # 2 capsule channels of 4D, 3x3
    out = layer(x)
    poses = x.view(2, 2, 4, 3, 3).permute(0, 1, 3, 4, 2).reshape(2, 18, 4)
    w = layer.weight
    u_hat = torch.stack([torch.stack([torch.stack([w[i, j] @ poses[b, i] for j in range(5)])
                                      for i in range(18)]) for b in range(2)])
    expected = torch.stack([_procedure_1(u_hat[b], 3) for b in range(2)]).flatten(1)
    torch.testing.assert_close(out, expected)


def _margin_formula(lengths: np.ndarray, labels: np.ndarray, m_plus: float, m_minus: float,
                    lam: float) -> float:
    total = 0.0
    for row, label in zip(lengths, labels, strict=True):
        for k, length in enumerate(row):
            if k == label:
                total += max(0.0, m_plus - length) ** 2
            else:
                total += lam * max(0.0, length - m_minus) ** 2
    return total / len(labels)


@pytest.mark.parametrize(("m_plus", "m_minus", "lam"), [(0.9, 0.1, 0.5), (0.8, 0.2, 1.0)])
def test_margin_loss_matches_its_formula(m_plus, m_minus, lam):
    torch.manual_seed(2)
    lengths = torch.rand(16, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (16,))
    loss = create_loss(LossConfig(name="margin", m_plus=m_plus, m_minus=m_minus,
                                  absent_weight=lam))
    expected = _margin_formula(lengths.numpy(), labels.numpy(), m_plus, m_minus, lam)
    assert float(loss.fn(lengths, labels)) == pytest.approx(expected, rel=1e-12)
    assert float(loss.fn(lengths, labels, reduction="sum")) == pytest.approx(16 * expected)
    assert loss.probabilities is False


def test_margin_loss_defaults_are_the_papers():
    config = cnnzoo.parse_config("model: {layers: [relu]}\ntrain: {loss: margin}\n").train.loss
    assert (config.m_plus, config.m_minus, config.absent_weight) == (0.9, 0.1, 0.5)


def test_capsnet_parameter_counts_are_the_papers():
    without = cnnzoo.plan_experiment(cnnzoo.parse_config(CAPSNET_LAYERS + "    - length\n"))
    assert without.total_params == 6_804_224
    assert [p.params for p in without.layers[1:5]] == [20_992, 0, 5_308_672, 1_474_560]
    full = cnnzoo.plan_experiment(cnnzoo.load_config("capsnet"))
    assert full.total_params == 8_215_568
    assert sum(p.numel() for p in cnnzoo.build_model(full).parameters()) == 8_215_568
    assert sum(p.numel() for p in cnnzoo.build_model(without).parameters()) == 6_804_224


def test_capsule_volumes_print_as_capsules_times_dim(cli):
    result = cli("summary", "--config", "capsnet")
    assert result.code == 0, result.err
    assert "6x6x(32x8)" in result.out and "1x1x(10x16)" in result.out
    assert "8,215,568" in result.out
    layers = json.loads(cli("summary", "--config", "capsnet", "--json").out)["layers"]
    assert [(x["output"], x.get("capsules")) for x in layers[3:]] == [
        ([6, 6, 256], [32, 8]), ([1, 1, 160], [10, 16]), ([1, 1, 160], [10, 16]),
        ([1, 1, 10], None)]


def test_decoder_masks_by_label_in_training_and_by_longest_capsule_otherwise():
    torch.manual_seed(3)
    model = cnnzoo.build_model(cnnzoo.load_config("capsnet-small"))
    images = torch.rand(4, 1, 28, 28)
    labels = torch.tensor([0, 3, 7, 9])
    decoder = model.layers[5]
    seen = []
    handle = decoder.mlp[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    scores = model(images, labels)
    masked = seen[-1].view(4, 10, 16)
    kept = masked.abs().sum(2) > 0
    assert kept.sum(1).tolist() == [1, 1, 1, 1]
    assert kept.float().argmax(1).tolist() == labels.tolist()
    expected_loss = 0.0005 * ((decoder.reconstruction - images) ** 2).sum() / 4
    torch.testing.assert_close(model.auxiliary_loss(images), expected_loss)
    model(images)
    handle.remove()
    assert seen[-1].view(4, 10, 16).abs().sum(2).argmax(1).tolist() == scores.argmax(1).tolist()


def test_network_without_decoder_adds_nothing():
    model = cnnzoo.build_model("lenet5")
    assert model.auxiliary_loss(torch.zeros(1, 1, 28, 28)) == 0.0


def test_class_scores_are_capsule_lengths():
    torch.manual_seed(4)
    model = cnnzoo.build_model(cnnzoo.load_config("capsnet-small")).eval()
    x = torch.rand(2, 1, 28, 28)
    poses = model.layers[:5](x).view(2, 10, 16)
    torch.testing.assert_close(model(x), poses.norm(dim=2), atol=1e-6, rtol=1e-5)
    assert float(model(x).detach().max()) < 1.0


def test_capsules_after_a_conv_group_its_filters():
    text = ("model:\n  layers:\n    - input: {width: 12, height: 12, depth: 1}\n"
            "    - conv: {filters: 24, kernel: 5, stride: 2}\n"
            "    - capsules: {units: 3, dim: 4, in_dim: 6}\n    - length\n")
    plan = cnnzoo.plan_experiment(cnnzoo.parse_config(text))
    assert plan.layers[2].params == 4 * 4 * 4 * 3 * 4 * 6  # 4x4 positions x 4 capsules
    model = cnnzoo.build_model(plan)
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 3)


BAD = "model:\n  layers:\n    - input: {width: 28, height: 28, depth: 1}\n"


@pytest.mark.parametrize(("layers", "fragments", "line"), [
    ("    - conv: 16\n    - relu\n    - capsules: 10\n",
     ["model.layers[3] (capsules)", "layers[2] relu is neither a capsule layer nor a conv",
      "primary_capsules"], 6),
    ("    - conv: 16\n    - pool: 2\n    - capsules: 10\n",
     ["layers[2] pool is neither a capsule layer nor a conv"], 6),
    ("    - primary_capsules: {capsules: 4, kernel: 9, stride: 2}\n"
     "    - capsules: {units: 10, routing: 0}\n",
     ["model.layers[2] (capsules)", "routing", "Received: routing=0"], 5),
    ("    - conv: 30\n    - capsules: {units: 10, in_dim: 8}\n",
     ["in_dim 8 does not divide the 30 filters of layers[1] conv", "Received: in_dim=8"], 5),
    ("    - conv: 32\n    - capsules: 10\n", ["set in_dim", "primary_capsules"], 5),
    ("    - conv: 8\n    - length\n", ["length needs capsules", "after a capsules layer"], 5),
    ("    - primary_capsules: {capsules: 4, kernel: 9, stride: 2}\n    - capsules: 10\n",
     ["gives 160 outputs but fashion_mnist has 10 classes", "add '- length' after it"], 5),
    ("    - conv: 8\n    - decoder: [64]\n",
     ["decoder reads a vector of capsules", "right after a capsules layer"], 5),
])
def test_capsule_config_errors(cli, tmp_path, layers, fragments, line):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD + layers + "data: {dataset: fashion_mnist}\n")
    result = cli("summary", "--config", path)
    assert result.code == 2
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err
    assert f"at line {line}:" in result.err, result.err


def test_margin_keys_belong_to_the_margin_loss(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {layers: [relu]}\ntrain:\n  loss: {m_plus: 0.8}\n")
    result = cli("summary", "--config", path)
    assert result.code == 2
    assert "m_plus only apply to the margin loss" in result.err
    assert "set name: margin" in result.err


def test_viz_shows_capsule_lengths_and_the_reconstruction():
    from cnnzoo.tools.viz import activation_volumes

    torch.manual_seed(5)
    model = cnnzoo.build_model(cnnzoo.load_config("capsnet-small")).eval()
    x = torch.rand(1, 1, 28, 28)
    panels = {plan.type_name: volume for plan, volume in activation_volumes(model, x)}
    assert set(panels) == {"conv", "primary_capsules", "capsules", "decoder"}
    lengths = model(x)[0].detach().numpy()
    np.testing.assert_allclose(panels["capsules"].values.ravel(), lengths, rtol=1e-5,
                               atol=1e-6)
    assert f"capsule {int(lengths.argmax())}" in panels["capsules"].title
    assert panels["decoder"].values.shape == (1, 28, 28)
    np.testing.assert_allclose(panels["decoder"].values, model.layers[5].reconstruction[0]
                               .detach().numpy())


TINY_CAPSNET = """
model:
  layers:
    - conv: {filters: 16, kernel: 5, stride: 2, activation: relu}
    - primary_capsules: {capsules: 4, dim: 4, kernel: 5, stride: 2}
    - capsules: {units: 10, dim: 8}
    - decoder: [32]
    - length
data: {dataset: fashion_mnist, val_split: 0.1, normalize: false}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}, loss: margin}
"""


@pytest.mark.slow
def test_capsule_network_trains_evaluates_predicts_and_draws(tmp_path, cli):
    """The whole path on fake Fashion-MNIST files: the step adds the reconstruction
    loss, and eval, predict and viz read the run like any other."""
    from PIL import Image

    from tests.helpers.datafiles import class_images, write_mnist

    write_mnist(tmp_path / "data")
    (tmp_path / "caps.yaml").write_text(TINY_CAPSNET)
    out = tmp_path / "run"
    result = cli("train", "--config", tmp_path / "caps.yaml", "--data-root", tmp_path / "data",
                 "--out", out)
    assert result.code == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert results["test_accuracy"] > 0.9  # the fake classes are easy to tell apart
    evaluated = cli("eval", out, "--json", "--data-root", tmp_path / "data")
    assert evaluated.code == 0, evaluated.err
    assert json.loads(evaluated.out)["accuracy"] == pytest.approx(results["test_accuracy"])
    image = class_images(np.array([7]), 28, 1, seed=5)[0, :, :, 0]
    Image.fromarray(image).save(tmp_path / "seven.png")
    predicted = cli("predict", out, tmp_path / "seven.png", "--json")
    assert predicted.code == 0, predicted.err
    best = json.loads(predicted.out)[0]["top"][0]
    assert best["index"] == 7
    assert "probability" not in best and 0.0 <= best["score"] < 1.0  # a capsule length
    assert "score 0." in cli("predict", out, tmp_path / "seven.png").out
    drawn = cli("viz", out, "--image", tmp_path / "seven.png", "--out", tmp_path / "viz")
    assert drawn.code == 0, drawn.err
    names = sorted(p.name for p in (tmp_path / "viz").iterdir())
    assert any("decoder" in n for n in names) and any("-capsules-" in n for n in names)


def test_training_loss_includes_the_weighted_reconstruction_error():
    """The step's loss is margin + weight x sum-squared error: checked on one batch
    against the two terms computed apart."""
    torch.manual_seed(6)
    model = cnnzoo.build_model(cnnzoo.parse_config(TINY_CAPSNET)).train()
    x, labels = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    scores = model(x, labels)
    margin = create_loss(LossConfig(name="margin")).fn(scores, labels)
    decoder = model.layers[5]
    reconstruction = decoder.mlp(
        (model.layers[:5](x).view(8, 10, 8) * torch.nn.functional.one_hot(labels, 10)[..., None])
        .flatten(1)).view(8, 1, 28, 28)
    expected = margin + 0.0005 * ((reconstruction - x) ** 2).sum() / 8
    torch.testing.assert_close(margin + model.auxiliary_loss(x), expected)


def test_capsules_stack_on_capsules():
    text = ("model:\n  layers:\n    - input: {width: 28, height: 28, depth: 1}\n"
            "    - primary_capsules: {capsules: 4, dim: 4, kernel: 9, stride: 3}\n"
            "    - capsules: {units: 6, dim: 8, routing: 2}\n"
            "    - capsules: {units: 3, dim: 12}\n    - length\n")
    plan = cnnzoo.plan_experiment(cnnzoo.parse_config(text))
    assert str(plan.layers[3].output) == "1x1x(3x12)"
    assert plan.layers[3].params == 6 * 3 * 12 * 8  # W_ij for 6 input and 3 output capsules
    model = cnnzoo.build_model(plan)
    assert sum(p.numel() for p in model.parameters()) == plan.total_params
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
