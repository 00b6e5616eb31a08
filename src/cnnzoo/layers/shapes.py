"""Shape arithmetic: one pure function per kind of window, shared by the planner,
the summary and the tests. Sizes are (height, width) pairs; volumes print as the
cs231n notes do, W x H x D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Pair = tuple[int, int]  # (height, width)
Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


@dataclass(frozen=True)
class Volume:
    """The activation volume of one image: W x H x D, or a flat vector of `depth` values."""

    width: int
    height: int
    depth: int
    flat: bool = False  # a vector (after fc or flatten), not a 1x1xD volume
    # Numbers per capsule when the depth is capsules of `capsule_dim` numbers each
    # (capsule c holds depth entries c*dim .. c*dim+dim-1); None for plain channels.
    capsule_dim: int | None = None

    @staticmethod
    def vector(units: int) -> Volume:
        return Volume(1, 1, units, flat=True)

    @property
    def numel(self) -> int:
        return self.width * self.height * self.depth

    @property
    def size(self) -> Pair:
        return (self.height, self.width)

    def torch_shape(self) -> tuple[int, ...]:
        """The shape of one image's tensor without the batch dimension."""
        return (self.depth,) if self.flat else (self.depth, self.height, self.width)

    @property
    def capsules(self) -> int:
        """Capsules per position: depth / capsule_dim (0 for a plain volume)."""
        return self.depth // self.capsule_dim if self.capsule_dim else 0

    def __str__(self) -> str:
        if self.capsule_dim:
            return f"{self.width}x{self.height}x({self.capsules}x{self.capsule_dim})"
        return f"{self.width}x{self.height}x{self.depth}"

    def as_list(self) -> list[int]:
        return [self.width, self.height, self.depth]


def effective_kernel(kernel: int, dilation: int) -> int:
    """The extent of a dilated kernel: F_eff = dilation * (F - 1) + 1."""
    return dilation * (kernel - 1) + 1


def window_output(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a sliding window: floor((W - F_eff + P_total) / S) + 1.

    `pad_total` is the padding on both sides together (2P when symmetric). The
    result is <= 0 when the window does not fit, which callers report.
    """
    span = size + pad_total - effective_kernel(kernel, dilation)
    if span < 0:
        return 0
    return span // stride + 1


def ceil_window_output(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a pooling window that rounds up (torch's ceil_mode):
    ceil((W - F + 2P) / S) + 1, less one when the last window would start in the
    padding on the right (it must start inside the input or the left padding)."""
    span = size + 2 * pad - kernel
    if span < 0:
        return 0
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= size + pad else out


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding so that the output is ceil(size / stride), as TensorFlow does.

    For stride 1 this keeps the size for odd and even kernels; the odd pixel of an
    even kernel's padding goes after (bottom/right), as in TensorFlow and PyTorch.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective_kernel(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def resolve_padding(
    padding: int | Pair | str, size: Pair, kernel: Pair, stride: Pair, dilation: Pair
) -> Padding4:
    """Padding as (top, bottom, left, right) for an int, a (h, w) pair, 'same' or 'valid'."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        top, bottom = same_padding(size[0], kernel[0], stride[0], dilation[0])
        left, right = same_padding(size[1], kernel[1], stride[1], dilation[1])
        return (top, bottom, left, right)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph, pw, pw)


def conv_output(
    size: Pair, kernel: Pair, stride: Pair, padding: Padding4, dilation: Pair = (1, 1)
) -> Pair:
    """(height, width) after a convolution or pooling window with resolved padding."""
    top, bottom, left, right = padding
    return (
        window_output(size[0], kernel[0], stride[0], top + bottom, dilation[0]),
        window_output(size[1], kernel[1], stride[1], left + right, dilation[1]),
    )


def receptive_field(rf: Pair, jump: Pair, kernel: Pair, stride: Pair) -> tuple[Pair, Pair]:
    """Receptive field and jump (input pixels between neighbouring outputs) after a window.

    rf' = rf + (F_eff - 1) * jump and jump' = jump * S, per axis.
    """
    new_rf = (rf[0] + (kernel[0] - 1) * jump[0], rf[1] + (kernel[1] - 1) * jump[1])
    new_jump = (jump[0] * stride[0], jump[1] * stride[1])
    return new_rf, new_jump


def format_pair(pair: Pair) -> str:
    """'3x3' for a (height, width) pair, written width first like the volumes."""
    return f"{pair[1]}x{pair[0]}"
