"""Convolution through the convolution theorem, and a cost model that says when it pays.

A convolution in space is a product in frequency. `conv2d` (like every deep
learning "convolution") is a cross-correlation, y[n] = sum_k x[n + k] w[k], whose
transform is X[f] * conj(W[f]) for real weights. Computed with FFTs of the padded
input's size, the circular result equals the linear one wherever the window does
not wrap around, which is exactly the positions a `valid` convolution keeps. The
cost no longer grows with the kernel's area, only with the image's, so large
kernels get cheap; small ones do not, because every filter is first transformed
to the full image size.

Everything here is differentiable by autograd (rfft2, einsum, irfft2), so the
backward pass is the same theorem run backwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.shapes import Pair

if TYPE_CHECKING:
    import torch

# Filter spectra above this many complex values (8 bytes each in fp32) are refused:
# the weight is transformed to the whole padded image per filter and channel, which
# is where FFT convolution's memory goes for deep layers on large images.
MAX_SPECTRUM_VALUES = 2**27  # 1 GiB


def fft_size(n: int) -> int:
    """The smallest n' >= n whose only prime factors are 2, 3 and 5 (fast for FFTs)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def fft_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Pair = (1, 1),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, stride, 0, dilation, groups)` computed with FFTs.

    `x` (B, C, H, W) is already padded. Fp16/bf16 inputs (autocast) are computed in
    fp32, since FFTs in half precision lose too much, and returned in their dtype.
    """
    import torch

    dtype = x.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    x, weight = x.to(compute), weight.to(compute)
    height, width = x.shape[-2:]
    filters, group_channels, kh, kw = weight.shape
    dh, dw = dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if (dh, dw) != (1, 1):
        # A dilated kernel is the kernel with zeros between its taps.
        spread = weight.new_zeros(filters, group_channels, span_h, span_w)
        spread[:, :, ::dh, ::dw] = weight
        weight = spread
    size = (fft_size(height), fft_size(width))
    # (B, g, C/g, fh, fw/2+1) and (g, O/g, C/g, fh, fw/2+1)
    xf = torch.fft.rfft2(x, s=size).unflatten(1, (groups, group_channels))
    wf = torch.fft.rfft2(weight, s=size).unflatten(0, (groups, filters // groups))
    yf = _correlate_spectra(xf, wf).flatten(1, 2)  # (B, O, fh, fw/2+1)
    y = torch.fft.irfft2(yf, s=size)
    y = y[..., : height - span_h + 1 : stride[0], : width - span_w + 1 : stride[1]]
    if bias is not None:
        y = y + bias.to(compute).view(1, -1, 1, 1)
    return y.to(dtype)


def _correlate_spectra(xf: torch.Tensor, wf: torch.Tensor) -> torch.Tensor:
    """Sum over c of xf[b, g, c, f] * conj(wf[g, o, c, f]): a small matrix product per
    frequency f, (B, C/g) @ (C/g, O/g).

    Batched complex matmuls of tiny matrices are slow on CPUs (a call per frequency),
    so unless all three sizes are large, the sum runs over the input channels as
    whole-spectrum multiply-adds, accumulated in place (autograd keeps the factors,
    not the sum, so this is safe).
    """
    import torch

    wf = wf.conj().resolve_conj()  # once, rather than in every product below
    batch, _, group_channels = xf.shape[:3]
    group_filters = wf.shape[1]
    if min(batch, group_channels, group_filters) >= 16:
        return torch.einsum("bgcuv,gocuv->bgouv", xf, wf)
    out = xf[:, :, 0, None] * wf[None, :, :, 0]
    for c in range(1, group_channels):
        out.addcmul_(xf[:, :, c, None], wf[None, :, :, c])
    return out


@dataclass(frozen=True)
class ConvShape:
    """One image's convolution, as the cost model sees it (sizes after padding)."""

    channels: int
    filters: int
    groups: int
    padded: Pair  # (height, width) of the padded input
    kernel: Pair
    stride: Pair
    dilation: Pair

    @property
    def span(self) -> Pair:
        return (
            self.dilation[0] * (self.kernel[0] - 1) + 1,
            self.dilation[1] * (self.kernel[1] - 1) + 1,
        )

    @property
    def output(self) -> Pair:
        (h, w), (sh, sw) = self.span, self.stride
        return ((self.padded[0] - h) // sh + 1, (self.padded[1] - w) // sw + 1)

    @property
    def fft_grid(self) -> Pair:
        return (fft_size(self.padded[0]), fft_size(self.padded[1]))

    def spectrum_values(self) -> int:
        """Complex values of the filters' spectra: what FFT convolution holds per layer."""
        fh, fw = self.fft_grid
        return self.filters * (self.channels // self.groups) * fh * (fw // 2 + 1)


# Seconds per unit of work, fitted by `scripts/bench_conv.py --fit` on a 2-core x86
# CPU with both threads (fp32, batch 8, forward; median relative error 13% for direct,
# 9% for FFT); the terms are those of `direct_terms` and `fft_terms`.
DIRECT_COST = (5.9e-12, 3.9e-10)
FFT_COST = (8.2e-11, 7e-10)
COST_BATCH = 8  # the filters' transforms are shared by a batch of this many images


SIMD_LANES = 16  # fp32 values per vector register (AVX-512)


def direct_terms(shape: ConvShape) -> tuple[float, ...]:
    """Work of one image's direct convolution: multiply-adds and values read or written.

    The CPU's direct convolution (oneDNN) computes the filters of an ungrouped conv
    a vector register at a time, so 8 filters cost as much as 16: multiply-adds
    are counted with the filters rounded up to whole registers.
    """
    (oh, ow), (kh, kw) = shape.output, shape.kernel
    filters = shape.filters
    if shape.groups == 1:
        filters = -(-filters // SIMD_LANES) * SIMD_LANES
    macs = oh * ow * filters * (shape.channels // shape.groups) * kh * kw
    values = shape.channels * shape.padded[0] * shape.padded[1] + shape.filters * oh * ow
    return (macs, values)


def fft_terms(shape: ConvShape) -> tuple[float, ...]:
    """Work of one image's FFT convolution: butterflies (n log2 n per transform, the
    filters' transforms shared by a batch) and complex multiply-adds of the product
    in frequency."""
    fh, fw = shape.fft_grid
    points, half = fh * fw, fh * (fw // 2 + 1)
    transforms = shape.channels + shape.filters + shape.spectrum_values() / half / COST_BATCH
    return (
        transforms * points * math.log2(points),
        half * shape.filters * (shape.channels // shape.groups),
    )


def direct_seconds(shape: ConvShape) -> float:
    """Estimated forward time of one image's direct convolution on the CPU."""
    return sum(c * t for c, t in zip(DIRECT_COST, direct_terms(shape), strict=True))


def fft_seconds(shape: ConvShape) -> float:
    """Estimated forward time of one image's FFT convolution on the CPU."""
    return sum(c * t for c, t in zip(FFT_COST, fft_terms(shape), strict=True))


def choose_impl(shape: ConvShape) -> str:
    """`fft` where the cost model expects it to be faster (and it fits), else `direct`."""
    if shape.spectrum_values() > MAX_SPECTRUM_VALUES:
        return "direct"
    return "fft" if fft_seconds(shape) < direct_seconds(shape) else "direct"
