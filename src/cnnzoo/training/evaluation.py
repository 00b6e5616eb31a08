"""Loss, accuracy and confusion matrix of a network over a split, without gradients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data.augment import BatchTransform
from cnnzoo.distributed import Distributed
from cnnzoo.losses import LossFn
from cnnzoo.training.devices import autocast


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    samples: int
    confusion: torch.Tensor  # (true, predicted) counts

    def per_class(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()


def predict_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    logits = model(x)
    if tta == "flip":
        logits = (logits + model(x.flip(3))) / 2
    return logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    transform: BatchTransform,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    tta: str = "none",
    dist: Distributed | None = None,
    loss_fn: LossFn | None = None,
) -> Evaluation:
    """Loss (`loss_fn`, plain cross-entropy when None), accuracy and confusion matrix
    over `batches`."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        with autocast(device, precision):
            logits = predict_logits(model, transform.normalize(images), tta)
        if loss_fn is None:
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        else:
            loss_sum += loss_fn(logits.float(), labels, reduction="sum").double()
        pred = logits.argmax(1)
        confusion += torch.bincount(labels * num_classes + pred, minlength=num_classes**2)
    if dist is not None:
        loss_sum, confusion = dist.all_sum(loss_sum), dist.all_sum(confusion)
    model.train(was_training)
    confusion = confusion.view(num_classes, num_classes).cpu()
    samples = int(confusion.sum())
    return Evaluation(
        loss=float(loss_sum) / max(1, samples),
        accuracy=float(confusion.diag().sum()) / max(1, samples),
        samples=samples,
        confusion=confusion,
    )
