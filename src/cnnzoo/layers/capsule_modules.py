"""The torch modules of the capsule layers (`primary_capsules`, `capsules`, `length`,
`decoder`): squashing, routing by agreement, and the reconstruction decoder. The
layer files import this module inside `build`, so that planning never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

SQUASH_EPS = 1e-12  # keeps the gradient of |s| finite at s = 0


def squash(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """v = |s|^2 / (1 + |s|^2) * s / |s| along `dim` (the paper's eq. 1): short vectors
    shrink to almost nothing, long ones to just under length 1."""
    squared = (s * s).sum(dim, keepdim=True)
    return s * (squared / (1.0 + squared) / torch.sqrt(squared + SQUASH_EPS))


def route(u_hat: torch.Tensor, iterations: int) -> torch.Tensor:
    """Routing by agreement (Procedure 1) from predictions u_hat (B, N, J, D) of N input
    capsules for J output capsules of D numbers; returns v (B, J, D).

    The coupling coefficients c_ij = softmax_j(b_ij) start uniform; each iteration
    raises b_ij by the agreement u_hat_j|i . v_j. Contractions are einsums (matrix
    products), which is also what the summary counts as mult-adds.
    """
    batch, inputs, outputs, _ = u_hat.shape
    logits = u_hat.new_zeros(batch, inputs, outputs)  # b_ij
    for iteration in range(iterations):
        coupling = torch.softmax(logits, dim=2)  # c_ij: each input spreads itself over j
        v = squash(torch.einsum("bnj,bnjd->bjd", coupling, u_hat))
        if iteration < iterations - 1:
            logits = logits + torch.einsum("bnjd,bjd->bnj", u_hat, v)
    return v


class PrimaryCapsules(nn.Module):
    """A convolution whose channels, in groups of `dim`, are squashed as capsules."""

    def __init__(self, conv: nn.Module, dim: int) -> None:
        super().__init__()
        self.conv = conv
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, capsules*dim, H, W)
        b, c, h, w = y.shape
        return squash(y.view(b, c // self.dim, self.dim, h, w), dim=2).view(b, c, h, w)


class Capsules(nn.Module):
    """Every input capsule u_i predicts every output capsule, u_hat_j|i = W_ij u_i;
    routing by agreement combines the predictions into v_j. No bias, as in the paper."""

    def __init__(self, inputs: int, in_dim: int, units: int, dim: int, routing: int,
                 squash_input: bool = False) -> None:
        super().__init__()
        # W_ij as (inputs, units, dim, in_dim); small normal weights, as in the
        # paper's published code, so the first squashes are in their linear range.
        self.weight = nn.Parameter(torch.randn(inputs, units, dim, in_dim) * 0.01)
        self.in_dim = in_dim
        self.routing = routing
        self.squash_input = squash_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if x.dim() == 4:  # (B, capsules*in_dim, H, W) -> (B, capsules*H*W, in_dim)
            _, channels, h, w = x.shape
            u = x.reshape(batch, channels // self.in_dim, self.in_dim, h, w)
            u = u.permute(0, 1, 3, 4, 2).reshape(batch, -1, self.in_dim)
        else:  # (B, capsules*in_dim)
            u = x.reshape(batch, -1, self.in_dim)
        if self.squash_input:
            u = squash(u)
        u_hat = torch.einsum("njdi,bni->bnjd", self.weight, u)  # (B, N, J, D)
        return route(u_hat, self.routing).flatten(1)  # (B, J*D)

    def extra_repr(self) -> str:
        inputs, units, dim, in_dim = self.weight.shape
        return f"{inputs}x{in_dim}D -> {units}x{dim}D, routing={self.routing}"


class CapsuleLength(nn.Module):
    """|v| of each capsule: (B, J*D) -> (B, J), or (B, C*D, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        grouped = x.reshape(b, c // self.dim, self.dim, *x.shape[2:])
        return torch.sqrt((grouped * grouped).sum(2) + SQUASH_EPS) - math.sqrt(SQUASH_EPS)


class Decoder(nn.Module):
    """fc-relu ... fc-sigmoid from the masked capsules to the image; identity on its input.

    `reconstruction` holds the last forward pass's images (B, C, H, W), for the loss
    and for pictures.
    """

    def __init__(self, widths: Sequence[int], dim: int, image: tuple[int, ...],
                 weight: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(widths)):
            layers += [nn.Linear(a, b), nn.ReLU() if i < len(widths) - 2 else nn.Sigmoid()]
        self.mlp = nn.Sequential(*layers)
        self.dim = dim
        self.image = tuple(image)
        self.weight = weight
        self.reconstruction: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        poses = x.reshape(batch, -1, self.dim)  # (B, J, D)
        if labels is None:
            labels = (poses * poses).sum(2).argmax(1)  # the longest capsule
        mask = F.one_hot(labels, poses.shape[1]).to(poses.dtype)
        masked = (poses * mask.unsqueeze(2)).flatten(1)
        self.reconstruction = self.mlp(masked).view(batch, *self.image)
        return x

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """weight x sum of squared pixel errors, averaged over the batch."""
        assert self.reconstruction is not None, "loss() before a forward pass"
        error = (self.reconstruction.float() - images.float()) ** 2
        return self.weight * error.flatten(1).sum(1).mean()
