"""Losses by name: what `train.loss.name` chooses.

Each loss is registered once with `register_loss`; the trainer and the evaluator
ask `create_loss` for the function, so adding a loss touches this file and the
choice list `LOSS_NAMES` in config.py (which stays free of torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from cnnzoo.config.experiment import LossConfig


class LossFn(Protocol):
    def __call__(self, scores: torch.Tensor, labels: torch.Tensor, *,
                 reduction: str = "mean") -> torch.Tensor:
        """scores (B, K) in float32, labels (B,) -> the loss, averaged or summed over B."""
        ...


@dataclass(frozen=True)
class Loss:
    name: str
    fn: LossFn  # the loss as trained (label smoothing and margins included)
    # True when softmax(scores) are the class probabilities the loss was trained for;
    # a margin loss gives scores whose softmax is not a probability anyone fitted.
    probabilities: bool


_LOSSES: dict[str, Callable[[LossConfig], Loss]] = {}


def register_loss(name: str) -> Callable[[Callable[[LossConfig], Loss]],
                                         Callable[[LossConfig], Loss]]:
    """Decorate a factory `LossConfig -> Loss` under `name`; a name is taken once."""

    def decorate(factory: Callable[[LossConfig], Loss]) -> Callable[[LossConfig], Loss]:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        _LOSSES[name] = factory
        return factory

    return decorate


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def create_loss(config: LossConfig) -> Loss:
    """The loss `config` names. The config was validated against LOSS_NAMES already."""
    assert config.name in _LOSSES, f"loss {config.name!r} is in LOSS_NAMES but not registered"
    return _LOSSES[config.name](config)


@register_loss("cross_entropy")
def _cross_entropy(config: LossConfig) -> Loss:
    def fn(scores: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(scores, labels, label_smoothing=config.label_smoothing,
                               reduction=reduction)

    return Loss("cross_entropy", fn, probabilities=True)


@register_loss("svm")
def _multiclass_svm(config: LossConfig) -> Loss:
    """The multiclass SVM (hinge) loss of the cs231n notes, Weston and Watkins' form:
    sum over j != y of max(0, s_j - s_y + margin), averaged over the batch."""
    margin = config.margin

    def fn(scores: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        true = scores.gather(1, labels[:, None])  # (B, 1)
        hinge = (scores - true + margin).clamp(min=0)  # (B, K)
        # The true class would add max(0, margin) = margin to every row: it is not a term.
        per_image = hinge.sum(1) - margin  # (B,)
        return per_image.mean() if reduction == "mean" else per_image.sum()

    return Loss("svm", fn, probabilities=False)
@register_loss("margin")
def _margin(config: LossConfig) -> Loss:
    """Sabour et al. 2017, eq. 4, summed over the classes: a present class k pays
    max(0, m+ - score_k)^2, an absent one lambda * max(0, score_k - m-)^2. The scores
    are capsule lengths in [0, 1)."""
    m_plus, m_minus, weight = config.m_plus, config.m_minus, config.absent_weight

    def fn(scores: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
        present = F.one_hot(labels, scores.shape[1]).to(scores.dtype)
        per_class = (present * F.relu(m_plus - scores) ** 2
                     + weight * (1.0 - present) * F.relu(scores - m_minus) ** 2)
        per_image = per_class.sum(1)
        return per_image.sum() if reduction == "sum" else per_image.mean()

    return Loss("margin", fn, probabilities=False)
