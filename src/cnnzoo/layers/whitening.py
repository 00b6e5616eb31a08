"""A conv's `init: whitening`: filters from the training images' patch covariance.

As airbench94 does for CIFAR-10 (Keller Jordan, github.com/KellerJordan/cifar10-airbench):
every k x k x D patch of a sample of images, unpadded and at stride 1 (with the
conv's dilation, so the patches are what one filter sees), gives a covariance C with
eigenvalues l_i and eigenvectors v_i. Filter i is v_i / sqrt(l_i + eps) and filter
i + F/2 its negative, for the F/2 eigenvectors with the largest eigenvalues; the pair
lets a ReLU after the layer keep both signs. On the patches the first F/2 outputs then
have covariance diag(l_i / (l_i + eps)): the identity where the image has more
variance than eps. The bias, where the conv has one, is -W mean, so that each output
is zero on the average patch.

The covariance is centred and summed in float64 (eigh of a float32 sum of millions of
patches loses the small eigenvalues, whose filters are the largest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnzoo.layers.shapes import Pair

if TYPE_CHECKING:
    import torch

WHITEN_EPS = 5e-4  # airbench94's, in the units of the normalised images' variance
# float64 patch values unfolded at a time: 2 MiB stays in cache, which took a 5,000-image
# sample of 28x28 in 2x2 patches from about 0.25 s to 0.1 s on one core (32 MiB chunks)
CHUNK_VALUES = 2**18


def patch_moments(images: torch.Tensor, kernel: Pair,
                  dilation: Pair = (1, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (K,) and covariance (K, K) in float64 of every unpadded stride-1 patch of
    `images` (N, D, H, W), K = D*kh*kw in the order of a conv weight's (D, kh, kw)."""
    import torch
    import torch.nn.functional as F

    n, depth, height, width = images.shape
    size = depth * kernel[0] * kernel[1]
    positions = ((height - dilation[0] * (kernel[0] - 1))
                 * (width - dilation[1] * (kernel[1] - 1)))
    total = torch.zeros(size, dtype=torch.float64)
    outer = torch.zeros(size, size, dtype=torch.float64)
    chunk = max(1, CHUNK_VALUES // (size * positions))
    for start in range(0, n, chunk):
        x = images[start:start + chunk].to(torch.float64)
        # (n, K, L) -> (K, n*L): one copy, and the product's long axis is contiguous
        patches = F.unfold(x, kernel, dilation=dilation).transpose(0, 1).reshape(size, -1)
        total += patches.sum(1)
        outer += patches @ patches.T
    count = n * positions
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


def whitening_weights(images: torch.Tensor, filters: int, kernel: Pair, dilation: Pair = (1, 1),
                      eps: float = WHITEN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The whitening conv's weight (F, D, kh, kw) and bias (F,), float32, for `filters`
    (even, at most 2*D*kh*kw) from the normalised images `images` (N, D, H, W)."""
    import torch

    depth = images.shape[1]
    mean, covariance = patch_moments(images, kernel, dilation)
    assert filters % 2 == 0 and filters <= 2 * len(mean), (filters, len(mean))
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    top = torch.arange(len(values) - 1, len(values) - 1 - filters // 2, -1)
    # A covariance has no negative eigenvalues: what eigh gives below 0 is rounding.
    scale = (values[top].clamp(min=0) + eps).rsqrt()
    half = vectors[:, top].T * scale[:, None]  # (F/2, K)
    weight = torch.cat((half, -half))
    bias = -(weight @ mean)
    return weight.reshape(filters, depth, *kernel).float(), bias.float()


def whiten_conv(conv: torch.nn.Module, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
    """Set a built conv's weight (and bias) from `images`, its input's sample."""
    import torch

    weight, bias = whitening_weights(images, conv.weight.shape[0], tuple(conv.weight.shape[2:]),
                                     conv.dilation, eps)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.copy_(bias)
