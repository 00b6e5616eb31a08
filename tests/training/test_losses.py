"""The losses (cnnzoo.training.losses): every configured name registered, and the svm
loss against cs231n's formula written out in numpy and against MultiMarginLoss, in
values and gradients, and trained, evaluated and predicted with end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnzoo.config.experiment import LOSS_NAMES, LossConfig
from cnnzoo.training.losses import create_loss, list_losses
from tests.helpers.common import write
from tests.helpers.datafiles import class_images, write_mnist


def svm_by_hand(scores: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """cs231n's L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin), averaged."""
    total = 0.0
    for s, y in zip(scores, labels, strict=True):
        total += sum(max(0.0, s[j] - s[y] + margin) for j in range(len(s)) if j != y)
    return total / len(scores)


def test_every_loss_name_is_registered():
    assert sorted(LOSS_NAMES) == list_losses()


@pytest.mark.parametrize("margin", [1.0, 0.5, 0.0, 3.0])
def test_svm_loss_matches_the_formula_and_multimargin(margin):
    generator = torch.Generator().manual_seed(int(margin * 10))
    scores = torch.randn(16, 7, generator=generator) * 2
    labels = torch.randint(0, 7, (16,), generator=generator)
    loss = create_loss(LossConfig(name="svm", margin=margin))
    assert not loss.probabilities
    got = loss.fn(scores, labels)
    assert got.item() == pytest.approx(svm_by_hand(scores.numpy(), labels.numpy(), margin),
                                       rel=1e-5, abs=1e-6)
    # MultiMarginLoss (p=1) has the same sum over j != y but divides it by the classes.
    reference = torch.nn.MultiMarginLoss(p=1, margin=margin)(scores, labels) * scores.shape[1]
    assert got.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)
    summed = loss.fn(scores, labels, reduction="sum")
    assert summed.item() == pytest.approx(got.item() * 16, rel=1e-5)


def test_svm_loss_gradient_matches_multimargin():
    scores = torch.randn(8, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    labels = torch.arange(8) % 5
    create_loss(LossConfig(name="svm")).fn(scores, labels).backward()
    ours = scores.grad.clone()
    scores.grad = None
    (torch.nn.MultiMarginLoss()(scores, labels) * 5).backward()
    assert torch.allclose(ours, scores.grad, atol=1e-6)


@pytest.mark.slow
def test_svm_run_trains_evaluates_and_predicts_scores(tmp_path, cli):
    write_mnist(tmp_path / "data")
    config = write(tmp_path / "svm.yaml", """
model:
  layers:
    - conv: {filters: 8, kernel: 3, padding: same, activation: relu}
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}, loss: {name: svm, margin: 1}}
""")
    out = tmp_path / "run"
    assert cli("train", "-c", config, "--data-root", tmp_path / "data", "-o", out, "-q").code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_accuracy"] > 0.9  # the fake classes are easy to tell apart
    evaluated = cli("eval", out, "--json", "--data-root", tmp_path / "data")
    assert json.loads(evaluated.out)["accuracy"] == pytest.approx(results["test_accuracy"])
    assert (out / "confusion.png").is_file() and (out / "curves.png").is_file()
    from PIL import Image

    Image.fromarray(class_images(np.array([7]), 28, 1, seed=5)[0, :, :, 0]).save(
        tmp_path / "seven.png")
    predicted = cli("predict", out, tmp_path / "seven.png", "--json")
    top = json.loads(predicted.out)[0]["top"]
    assert top[0]["class"] == "Sneaker"
    assert all("score" in g and "probability" not in g for g in top)  # not probabilities
    assert [g["score"] for g in top] == sorted((g["score"] for g in top), reverse=True)
    assert "score" in cli("predict", out, tmp_path / "seven.png").out
