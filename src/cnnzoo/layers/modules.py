"""The torch modules that layer types build and that torch's own layers lack: padding
in any mode, FFT convolution, unshared (locally connected) filters, a residual sum, a
fixed filter in the frequency domain, parallel branches, squeeze-and-excitation.
Layer files import this module inside `build`, so that planning never imports torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers.fft import fft_conv2d
from cnnzoo.layers.padding import pad
from cnnzoo.layers.shapes import Padding4, Pair, conv_output, resolve_padding


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that takes padding as (top, bottom, left, right) in any mode, and
    computes the convolution directly or, with `impl="fft"`, through FFTs.

    Symmetric zero padding is left to the direct convolution itself (fastest);
    anything else (TensorFlow-style 'same' with an even kernel, mirror modes, FFT)
    is padded first. The parameters and state_dict keys are those of `nn.Conv2d`
    whatever the impl, so weights move freely between the two.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = (1, 1),
        padding: Padding4 = (0, 0, 0, 0),
        padding_mode: str = "zeros",
        dilation: Pair = (1, 1),
        groups: int = 1,
        bias: bool = True,
        impl: str = "direct",
    ) -> None:
        if impl not in ("direct", "fft"):
            raise ValueError(f"impl must be direct or fft, got {impl!r}")
        top, bottom, left, right = padding
        native = impl == "direct" and padding_mode == "zeros" and top == bottom and left == right
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(top, left) if native else 0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.explicit_padding: Padding4 | None = None if native else padding
        self.explicit_mode = padding_mode
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_padding is not None:
            x = pad(x, self.explicit_padding, self.explicit_mode)
        if self.impl == "fft":
            return fft_conv2d(x, self.weight, self.bias, self.stride, self.dilation, self.groups)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.explicit_padding is not None:
            text += f", pad={self.explicit_padding} {self.explicit_mode}"
        if self.impl != "direct":
            text += f", impl={self.impl}"
        return text


class Linear(nn.Linear):
    """`nn.Linear` that flattens a (B, C, H, W) volume to (B, C*H*W) first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        return F.linear(x, self.weight, self.bias)


class Residual(nn.Module):
    """y = body(x) + shortcut(x)."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Branches(nn.Module):
    """Parallel paths on one input, joined along the channels (concat) or summed (add)."""

    def __init__(self, paths: list[nn.Module], merge: str) -> None:
        super().__init__()
        if merge not in ("concat", "add"):
            raise ValueError(f"merge must be concat or add, got {merge!r}")
        self.paths = nn.ModuleList(paths)
        self.concat = merge == "concat"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for path in self.paths:  # a plain loop: TorchScript unrolls it over the ModuleList
            outs.append(path(x))
        if self.concat:
            return torch.cat(outs, dim=1)
        total = outs[0]
        for out in outs[1:]:
            total = total + out
        return total


class SqueezeExcite(nn.Module):
    """Channel attention: y = x * gate(expand(act(reduce(mean over W x H of x))))."""

    def __init__(self, channels: int, hidden: int, activation: nn.Module,
                 gate: nn.Module) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, hidden)
        self.activation = activation
        self.expand = nn.Linear(hidden, channels)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.activation(self.reduce(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]  # (B, C, 1, 1) over (B, C, H, W)


class _LocalProduct(torch.autograd.Function):
    """y[p, b, o] = sum over taps (i, j) and channels c of x[b, window(p) + (i, j), c]
    * w[p, o, i, j, c], for every output position p at once.

    The input is made channels-last first, so that a window's taps along a row are
    one contiguous run of kw * C values: gathering the windows (im2col) then copies
    runs instead of single values. The gradient of the input scatters each tap back
    with one strided add per tap. Both are several times faster than autograd
    through `Tensor.unfold`.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, geometry: tuple) -> torch.Tensor:
        (out_h, out_w), (kh, kw), (sh, sw), (dh, dw) = geometry
        xs = x.permute(0, 2, 3, 1).contiguous()  # (B, Hp, Wp, C)
        batch, hp, wp, channels = xs.shape
        windows = xs.as_strided(
            (out_h, out_w, batch, kh, kw, channels),
            (sh * wp * channels, sw * channels, hp * wp * channels, dh * wp * channels,
             dw * channels, 1),
            xs.storage_offset(),
        )
        cols = windows.reshape(out_h * out_w, batch, kh * kw * channels)  # (L, B, K)
        ctx.save_for_backward(cols, weight)
        ctx.geometry, ctx.padded_shape = geometry, xs.shape
        return torch.bmm(cols, weight.transpose(1, 2))  # (L, B, O)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        cols, weight = ctx.saved_tensors
        (out_h, out_w), (kh, kw), (sh, sw), (dh, dw) = ctx.geometry
        grad = grad.contiguous()
        # Under autocast the forward product ran in bf16 and so does the gradient: the
        # backward products run in that precision too, and each gradient is returned in
        # the dtype of what it is the gradient of.
        compute = grad.dtype
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad.transpose(1, 2), cols.to(compute)).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            batch, channels = ctx.padded_shape[0], ctx.padded_shape[3]
            grad_cols = torch.bmm(grad, weight.to(compute)).view(out_h, out_w, batch, kh, kw,
                                                                 channels)
            grad_xs = cols.new_zeros(ctx.padded_shape)
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
                    cols_ = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
                    grad_xs[:, rows, cols_, :] += grad_cols[:, :, :, i, j, :].permute(2, 0, 1, 3)
            grad_x = grad_xs.permute(0, 3, 1, 2)
        return grad_x, grad_weight, None


def _pair(value: int | Pair) -> Pair:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


class LocallyConnected2d(nn.Module):
    """A 2-D locally-connected layer (unshared convolution) for inputs of one size.

    `weight` is (out_h, out_w, out_channels, kh, kw, in_channels): the filters of
    every output position; `bias` is (out_channels, out_h, out_w). `padding` is an
    int, an (h, w) pair, (top, bottom, left, right), "same" or "valid", in any of
    the padding modes of `conv`. With every position's weights equal to a conv's
    weights (and its bias broadcast), the output is that conv's output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | Pair,
        kernel_size: int | Pair,
        stride: int | Pair = 1,
        padding: int | Pair | Padding4 | str = 0,
        padding_mode: str = "zeros",
        dilation: int | Pair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_size = _pair(input_size)
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        if isinstance(padding, tuple) and len(padding) == 4:
            self.padding: Padding4 = padding
        else:
            self.padding = resolve_padding(
                padding, self.input_size, self.kernel_size, self.stride, self.dilation
            )
        self.padding_mode = padding_mode
        self.output_size = conv_output(
            self.input_size, self.kernel_size, self.stride, self.padding, self.dilation
        )
        if min(self.output_size) < 1:
            raise ValueError(
                f"kernel {self.kernel_size} does not fit the input {self.input_size} "
                f"padded by {self.padding}"
            )
        out_h, out_w = self.output_size
        kh, kw = self.kernel_size
        # Channels innermost, the order in which forward gathers each window.
        self.weight = nn.Parameter(torch.empty(out_h, out_w, out_channels, kh, kw, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels, out_h, out_w)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's default initialisation, position by position.
        bound = 1 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != (self.in_channels, *self.input_size):
            raise ValueError(
                f"LocallyConnected2d was made for inputs of {self.in_channels}x"
                f"{self.input_size[0]}x{self.input_size[1]} (C x H x W), got {tuple(x.shape)}"
            )
        x = pad(x, self.padding, self.padding_mode)
        out_h, out_w = self.output_size
        geometry = (self.output_size, self.kernel_size, self.stride, self.dilation)
        weight = self.weight.reshape(out_h * out_w, self.out_channels, -1)  # (L, O, K)
        y = _LocalProduct.apply(x, weight, geometry)  # (L, B, O)
        y = y.permute(1, 2, 0).reshape(x.shape[0], self.out_channels, out_h, out_w)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )
        if any(self.padding):
            text += f", padding={self.padding}"
            if self.padding_mode != "zeros":
                text += f" {self.padding_mode}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        return text


def dft_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi k m / n, (n, n) float64; k m is reduced mod n first so that
    large n keeps full precision."""
    k = np.arange(n)
    angle = 2 * np.pi * (np.outer(k, k) % n) / n
    return np.cos(angle), np.sin(angle)


class FreqFilter(nn.Module):
    """Multiply each channel's DFT by a fixed real, even mask; return the inverse DFT.

    The mask and the DFT matrices are non-persistent buffers: they follow the module
    to its device but stay out of the state dict, which holds no weights at all.
    """

    def __init__(self, mask: np.ndarray, impl: str = "matmul") -> None:
        super().__init__()
        if impl not in ("matmul", "fft"):
            raise ValueError(f"impl must be matmul or fft, got {impl!r}")
        height, width = mask.shape
        self.impl = impl
        self.register_buffer("mask", torch.from_numpy(mask.astype(np.float32, copy=False)),
                             persistent=False)
        if impl == "fft":
            return
        ch, sh = dft_matrices(height)
        cw, sw = dft_matrices(width)
        scale = 1.0 / (height * width)
        # Forward: X [Cw Sw] -> [X Cw, X Sw]; then [Ch; Sh] (.) -> the four products
        # Ch X Cw, Ch X Sw, Sh X Cw, Sh X Sw. Re F = Ch X Cw - Sh X Sw and
        # -Im F = Sh X Cw + Ch X Sw (F = C - iS along each axis).
        self._matrix("along_w", np.concatenate([cw, sw], axis=1))  # (W, 2W)
        self._matrix("along_h", np.concatenate([ch, sh], axis=0))  # (2H, H)
        # Inverse (conj F = C + iS), real part: with Z = M Re F and Y = M (-Im F),
        # U = Ch Z + Sh Y and V = Sh Z - Ch Y; out = (U Cw - V Sw) / (H W).
        self._matrix("back_h", np.block([[ch, sh], [sh, -ch]]))  # (2H, 2H)
        self._matrix("back_w", np.concatenate([cw, -sw], axis=0) * scale)  # (2W, W)

    def _matrix(self, name: str, value: np.ndarray) -> None:
        self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        # FFTs and long DFT sums in half precision lose too much: compute in fp32.
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        x = x.to(compute)
        if self.impl == "fft":
            return self._fft(x).to(dtype)
        height, width = x.shape[-2:]
        a = torch.matmul(x, self.along_w.to(compute))  # (B, C, H, 2W): [X Cw, X Sw]
        b = torch.matmul(self.along_h.to(compute), a)  # (B, C, 2H, 2W)
        ch_x, sh_x = b[..., :height, :], b[..., height:, :]
        real = ch_x[..., :width] - sh_x[..., width:]  # Ch X Cw - Sh X Sw
        minus_imag = sh_x[..., :width] + ch_x[..., width:]  # Sh X Cw + Ch X Sw
        mask = self.mask.to(compute)
        z = torch.cat([real * mask, minus_imag * mask], dim=-2)  # (B, C, 2H, W)
        uv = torch.matmul(self.back_h.to(compute), z)  # (B, C, 2H, W): [U; V]
        u_v = torch.cat([uv[..., :height, :], uv[..., height:, :]], dim=-1)  # (B, C, H, 2W)
        return torch.matmul(u_v, self.back_w.to(compute)).to(dtype)

    def _fft(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        spectrum = torch.fft.rfft2(x)
        # rfft2 keeps the columns 0..W/2; the mask's other half is their mirror image.
        spectrum *= self.mask[:, : width // 2 + 1].to(x.dtype)
        return torch.fft.irfft2(spectrum, s=(height, width))

    def extra_repr(self) -> str:
        return f"size={tuple(self.mask.shape)}, impl={self.impl}"
