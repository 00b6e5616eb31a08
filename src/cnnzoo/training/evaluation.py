"""Loss, accuracy and confusion matrix of a network over a split, without gradients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data.augment import BatchTransform
from cnnzoo.model.devices import autocast
from cnnzoo.runs.predictions import TOP_CLASSES, Predictions
from cnnzoo.training.distributed import Distributed
from cnnzoo.training.losses import LossFn


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    samples: int
    confusion: torch.Tensor  # (true, predicted) counts
    predictions: PerImage | None = None  # every image's result, in the split's order

    def per_class(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()


@dataclass
class PerImage:
    """Each image's true class, chosen class and its top classes' softmax scores."""

    labels: torch.Tensor  # (N,)
    predicted: torch.Tensor  # (N,)
    top_classes: torch.Tensor  # (N, K), most likely first
    top_scores: torch.Tensor  # (N, K)

    def to_file(self, split: str, dataset: str) -> Predictions:
        """The record `cnnzoo.runs.predictions` writes."""
        return Predictions(self.labels.numpy(), self.predicted.numpy(),
                           self.top_classes.numpy(), self.top_scores.numpy(), split, dataset)


def shift_image(x: torch.Tensor, dy: int, dx: int, fill: torch.Tensor | float) -> torch.Tensor:
    """`x` (N, C, H, W) moved down by `dy` and right by `dx` pixels; the pixels that come
    in are `fill` (per channel: what a black pixel normalises to, as crop's zero padding
    gives in training)."""
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    out.copy_(torch.as_tensor(fill, dtype=x.dtype, device=x.device).expand_as(x))
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def predict_logits(model: nn.Module, x: torch.Tensor, tta: str,
                   fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The logits of normalised images `x`, averaged over the views of `tta`: the image
    (none); and its mirror (flip); or its four one-pixel shifts (shift); or both, ten
    views (flip_shift). `fill` is what pixels shifted in take."""
    views = [x]
    if tta in ("shift", "flip_shift"):
        views += [shift_image(x, dy, dx, fill) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    if tta in ("flip", "flip_shift"):
        views += [v.flip(3) for v in views]
    logits = model(views[0])
    for view in views[1:]:
        logits = logits + model(view)
    return logits / len(views) if len(views) > 1 else logits


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
    parts: list[tuple[torch.Tensor, ...]] = []
    top = min(TOP_CLASSES, num_classes)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        with autocast(device, precision):
            logits = predict_logits(model, transform.normalize(images), tta,
                                    transform.neg_shift)
        if loss_fn is None:
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        else:
            loss_sum += loss_fn(logits.float(), labels, reduction="sum").double()
        pred = logits.argmax(1)
        confusion += torch.bincount(labels * num_classes + pred, minlength=num_classes**2)
        scores, classes = logits.float().softmax(1).topk(top, 1)
        parts.append((labels, pred, classes, scores))
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
        predictions=_per_image(parts, samples, top, device, dist),
    )


def _per_image(parts: list[tuple[torch.Tensor, ...]], samples: int, top: int,
               device: torch.device, dist: Distributed | None) -> PerImage:
    """The batches' per-image results in the split's order. Under several processes,
    process r evaluated batches r, r + world, ... (`eval_batches`); each writes its
    batches into zeroed tensors of the whole split at their places, and a sum over the
    processes puts every image in its place (the places never overlap)."""
    if parts:
        columns = [torch.cat([p[i] for p in parts]) for i in range(4)]
    else:  # a process with no batch of the split
        columns = [torch.zeros(shape, dtype=dtype, device=device) for shape, dtype in (
            ((0,), torch.int64), ((0,), torch.int64), ((0, top), torch.int64),
            ((0, top), torch.float32))]
    if dist is not None and dist.active:
        # Every batch but the split's last is full, so rank 0's first batch is the
        # batch size unless the split is a single batch (which rank 0 alone holds).
        first = len(parts[0][0]) if parts and dist.rank == 0 else 0
        batch = dist.sum_int(torch.tensor(first, device=device))
        places = torch.cat([torch.arange(len(p[0]), device=device)
                            + (k * dist.world + dist.rank) * batch
                            for k, p in enumerate(parts)] or [columns[0]])
        whole = []
        for column in columns:
            full = column.new_zeros((samples, *column.shape[1:]))
            full[places] = column
            whole.append(dist.all_sum(full))
        columns = whole
    labels, predicted, classes, scores = (c.cpu() for c in columns)
    return PerImage(labels, predicted, classes, scores)
