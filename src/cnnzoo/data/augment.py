"""What happens to a batch on the device before the network sees it: scaling to
floats, normalisation, the memory layout, and (training only) augmentation drawn
from a seed, so that a resumed run draws the same crops and erasures."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnzoo.config.experiment import AugmentConfig


class BatchTransform:
    """Normalisation and augmentation of uint8 batches, on the batch's device."""

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: AugmentConfig,
        normalize: bool,
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        self.augment_config = augment
        self.scale = torch.tensor([1 / (255 * s) for s in std], device=device).view(1, -1, 1, 1)
        self.shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)],
                                  device=device).view(1, -1, 1, 1)
        if not normalize:
            self.scale = torch.full_like(self.scale, 1 / 255)
            self.shift = torch.zeros_like(self.shift)
        self.neg_shift = -self.shift  # made once: every op per step costs a launch on a GPU
        self.generator = torch.Generator(device=device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float: (x/255 - mean) / std in one multiply-add."""
        x = torch.addcmul(self.neg_shift, images.float(), self.scale)
        return x.contiguous(memory_format=self.memory_format)

    def train(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment (crop, flip), normalise, add noise, then erase; randomness from `seed`
        only."""
        aug = self.augment_config
        g = self.generator.manual_seed(seed)
        if aug.crop:
            images = random_crop(images, aug.crop, g)
        if aug.flip:
            flip = torch.rand(len(images), device=images.device, generator=g) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        x = self.normalize(images)
        if aug.noise:
            sigma = 255 * aug.noise * self.scale  # (1, C, 1, 1): sigma / std once normalised
            x = x + sigma * torch.randn(x.shape, device=x.device, generator=g)
        if aug.erase:
            x = random_erase(x, aug.erase, g)
        return x


def random_crop(images: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random crop of the original size from each image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=g)
    rows = (dy + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=images.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def random_erase(
    x: torch.Tensor,
    p: float,
    g: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Set a random rectangle of each image to 0 with probability p (Zhong et al. 2020),
    with torchvision's default area and aspect ranges."""
    n, _, h, w = x.shape
    dev = x.device
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, device=dev, generator=g))
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        n, device=dev, generator=g
    )
    aspect = torch.exp(log_ratio)
    eh = torch.sqrt(area * aspect).round().clamp(1, h).long()
    ew = torch.sqrt(area / aspect).round().clamp(1, w).long()
    top = (torch.rand(n, device=dev, generator=g) * (h - eh + 1)).long()
    left = (torch.rand(n, device=dev, generator=g) * (w - ew + 1)).long()
    apply = torch.rand(n, device=dev, generator=g) < p
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
        & apply.view(n, 1, 1)
    )
    return x.masked_fill(inside.unsqueeze(1), 0.0)
