"""The classic fixed kernels of image processing, as weights of a `conv` layer.

A blur, a sharpen or an edge detector is a convolution whose weights were chosen
by hand instead of learned. Kernels are written as the window's weights, top row
first: the output at (y, x) is sum over (i, j) of k[i][j] * image[y + i - c, x + j - c]
(PyTorch's conv2d is this cross-correlation; no flip).

`box_blur`, `gaussian_blur` and `identity` take any `kernel` size (the blur grows
with it); the others are defined at 3x3 only, so `kernel` must stay 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.shapes import Pair

if TYPE_CHECKING:
    import torch

Rows = list[list[float]]


def _identity(size: Pair) -> Rows:
    rows = [[0.0] * size[1] for _ in range(size[0])]
    # The centre, or for an even size the tap 'same' padding lines up with each
    # pixel (the odd pixel of padding goes after).
    rows[(size[0] - 1) // 2][(size[1] - 1) // 2] = 1.0
    return rows


def _box(size: Pair) -> Rows:
    return [[1.0 / (size[0] * size[1])] * size[1] for _ in range(size[0])]


def _binomial(n: int) -> list[float]:
    """Row n-1 of Pascal's triangle, normalised: the discrete Gaussian of n taps."""
    row = [math.comb(n - 1, i) for i in range(n)]
    return [v / sum(row) for v in row]


def _gaussian(size: Pair) -> Rows:
    down, across = _binomial(size[0]), _binomial(size[1])
    return [[a * b for b in across] for a in down]


def _fixed(rows: Rows) -> Callable[[Pair], Rows]:
    return lambda size: [list(r) for r in rows]


@dataclass(frozen=True)
class FixedKernel:
    name: str
    doc: str
    make: Callable[[Pair], Rows]  # window weights for a (height, width) kernel
    size: Pair | None  # the only size it is defined at; None: any size

    def weights(self, size: Pair) -> Rows:
        return self.make(size)


FIXED_KERNELS: dict[str, FixedKernel] = {
    k.name: k
    for k in (
        FixedKernel("identity", "1 at the centre: the image unchanged", _identity, None),
        FixedKernel("box_blur", "the mean of the window", _box, None),
        FixedKernel(
            "gaussian_blur", "binomial weights, 3x3: [1 2 1; 2 4 2; 1 2 1] / 16", _gaussian, None
        ),
        FixedKernel(
            "sharpen", "[0 -1 0; -1 5 -1; 0 -1 0]: identity + edge",
            _fixed([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), (3, 3),
        ),
        FixedKernel(
            "edge", "negative Laplacian [0 -1 0; -1 4 -1; 0 -1 0]: 0 on flat regions",
            _fixed([[0, -1, 0], [-1, 4, -1], [0, -1, 0]]), (3, 3),
        ),
        FixedKernel(
            "sobel_x", "[-1 0 1; -2 0 2; -1 0 1]: positive where brightness grows to the right",
            _fixed([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]), (3, 3),
        ),
        FixedKernel(
            "sobel_y", "[-1 -2 -1; 0 0 0; 1 2 1]: positive where brightness grows downwards",
            _fixed([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]), (3, 3),
        ),
        FixedKernel(
            "emboss", "[-2 -1 0; -1 1 1; 0 1 2]: relief lit from the top left",
            _fixed([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]), (3, 3),
        ),
    )
}


def fixed_kernel(name: str) -> FixedKernel:
    return FIXED_KERNELS[name]


def depthwise_weight(names: tuple[str, ...], size: Pair, channels: int, filters: int
                     ) -> torch.Tensor:
    """The weight (filters, 1, kh, kw) of a depthwise conv (groups = channels) that applies
    the kernels `names` in turn to every input channel: channel c's filters are
    names[0], names[1], ..., names[0], ... (filters // channels of them)."""
    import torch

    bank = torch.tensor([fixed_kernel(n).weights(size) for n in names], dtype=torch.float32)
    per_channel = filters // channels
    order = [i % len(names) for i in range(per_channel)] * channels
    return bank[order].unsqueeze(1).contiguous()


def display_range(name: str, size: Pair) -> tuple[float, float]:
    """The output range for inputs in [0, 1]: (-sum of negative weights, sum of positive)."""
    weights = [w for row in fixed_kernel(name).weights(size) for w in row]
    return (sum(w for w in weights if w < 0), sum(w for w in weights if w > 0))
