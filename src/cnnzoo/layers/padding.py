"""Padding a batch of volumes on each side, in every mode the model language has.

| mode        | numpy.pad mode | what the border holds (input 1 2 3, pad 2)  |
|-------------|----------------|---------------------------------------------|
| `zeros`     | constant       | 0 0 | 1 2 3 | 0 0                           |
| `reflect`   | reflect        | 3 2 | 1 2 3 | 2 1   (mirror, edge not repeated) |
| `replicate` | edge           | 1 1 | 1 2 3 | 3 3                           |
| `circular`  | wrap           | 2 3 | 1 2 3 | 1 2                           |
| `symmetric` | symmetric      | 2 1 | 1 2 3 | 3 2   (mirror, edge repeated)  |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnzoo.layers.shapes import Padding4

if TYPE_CHECKING:
    import torch

PADDING_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")

# The largest pad each mode accepts, as a function of the input size: reflect mirrors
# without repeating the edge, so it has one pixel fewer to mirror than the size.
# Symmetric is computed by indexing, which repeats the mirror as numpy does, so it
# has no limit (nor do zeros and replicate).
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
    import torch.nn.functional as F

    top, bottom, left, right = padding
    if not any(padding):
        return x
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    if mode == "symmetric":
        rows = symmetric_index(x.shape[-2], top, bottom, x.device)
        cols = symmetric_index(x.shape[-1], left, right, x.device)
        return x.index_select(-2, rows).index_select(-1, cols)
    return F.pad(x, (left, right, top, bottom), mode=mode)


def symmetric_index(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source index of every padded position along an axis, in numpy's symmetric mode.

    The mirror with the edge repeated is periodic with period 2 * size: positions
    0..size-1 read forwards, size..2*size-1 read backwards. Indexing (rather than
    concatenating flipped slices) works for pads of any length.
    """
    import torch

    period = 2 * size
    index = torch.arange(-before, size + after, device=device).remainder(period)
    return torch.where(index < size, index, period - 1 - index)
