"""Mixup and CutMix: training on blends of two images, with the loss blended alike.

Mixup (Zhang et al. 2018) takes lam from Beta(alpha, alpha) and trains on
lam * x_i + (1 - lam) * x_j; CutMix (Yun et al. 2019) pastes a box of x_j, whose area
is (1 - lam) of the image, into x_i, and sets lam to the share of x_i that is left.
The partner j of every image is a random permutation of the batch. The loss is
lam * loss(labels) + (1 - lam) * loss(partner's labels), which for cross-entropy is
the cross-entropy against the mixed one-hot targets, and is defined for every loss.
With both on, each batch is mixed one way or the other, half of the time each (timm's
default). Everything is drawn from the step's seed, so a resumed run mixes the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Mix:
    """A mixed batch: the images, each image's partner (an index into the batch) and
    the share `lam` of its own image."""

    images: torch.Tensor
    partner: torch.Tensor
    lam: float


def mix_batch(x: torch.Tensor, mixup: float, cutmix: float, seed: int) -> Mix | None:
    """Mix the batch `x` (N, C, H, W) as `mixup` and `cutmix` (Beta alphas; 0: off) say;
    None when both are off."""
    if not mixup and not cutmix:
        return None
    rng = np.random.default_rng(seed)
    use_cutmix = bool(cutmix) and (not mixup or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    g = torch.Generator(device=x.device).manual_seed(int(rng.integers(2**62)))
    partner = torch.randperm(len(x), device=x.device, generator=g)
    if not use_cutmix:
        return Mix(torch.lerp(x[partner], x, lam), partner, lam)
    top, bottom, left, right = cut_box(x.shape[2], x.shape[3], lam, rng)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
    area = (bottom - top) * (right - left)
    return Mix(mixed, partner, 1.0 - area / (x.shape[2] * x.shape[3]))


def cut_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of about (1 - lam) of the image's area, with the image's aspect, centred
    anywhere and clipped at the borders: (top, bottom, left, right)."""
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    left, right = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    return top, bottom, left, right
