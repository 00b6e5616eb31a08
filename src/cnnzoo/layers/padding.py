"""Padding a batch of volumes on each side, in every mode the model language has."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnzoo.shapes import Padding4

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# The largest pad each mode accepts, as a function of the input size: reflect mirrors
# without repeating the edge, so it has one pixel fewer to mirror than the size.
_MAX_PAD = {
    "reflect": lambda size: size - 1,
    "circular": lambda size: size,
}


def max_padding(mode: str, size: int) -> int | None:
    """The largest padding `mode` supports on an input of `size` pixels; None if unlimited."""
    limit = _MAX_PAD.get(mode)
    return None if limit is None else limit(size)


def pad(x: torch.Tensor, padding: Padding4, mode: str) -> torch.Tensor:
    """Pad the last two dimensions of `x` (B, C, H, W) by (top, bottom, left, right)."""
    top, bottom, left, right = padding
    if not any(padding):
        return x
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    return F.pad(x, (left, right, top, bottom), mode=mode)
