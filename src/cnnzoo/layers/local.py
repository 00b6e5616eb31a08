"""The locally-connected layer: a convolution's windows without its weight sharing.

Each output position looks at the same small window a convolution would, but has
filters of its own. That keeps local connectivity and drops parameter sharing:
useful when the input is aligned and different places need different detectors
(centred faces, as in DeepFace), at the price of one filter bank per position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers.conv import WindowSpec, _effective
from cnnzoo.layers.init import initialise
from cnnzoo.layers.padding import pad
from cnnzoo.params import Where, bool_kind, param
from cnnzoo.plan import LayerPlan, Planner
from cnnzoo.registry import Inferred, register_layer
from cnnzoo.shapes import Padding4, Pair, Volume, conv_output, resolve_padding


@register_layer(
    "local", primary="filters",
    doc="locally connected: conv's windows, but every output position has its own filters",
)
@dataclass(frozen=True, kw_only=True)
class LocalSpec(WindowSpec):
    bias: bool = param(True, kind=bool_kind(), doc="add a learned bias per filter and position")

    def infer(self, inp: Volume, where: Where, planner: Planner) -> Inferred:
        padding, (out_h, out_w) = self.window_geometry(inp, where, planner)
        out = Volume(out_w, out_h, self.filters)
        positions = out_h * out_w
        fan_in = inp.depth * self.kernel[0] * self.kernel[1]
        return Inferred(
            output=out,
            label=f"local {self.describe(padding)}, {self.filters}",
            params=positions * self.filters * fan_in + (out.numel if self.bias else 0),
            macs=positions * self.filters * fan_in,
            window=(_effective(self.kernel, self.dilation), self.stride),
            dense_params=inp.numel * out.numel + (out.numel if self.bias else 0),
            detail={"padding": padding},
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        layer = LocallyConnected2d(
            plan.input.depth,
            self.filters,
            input_size=plan.input.size,
            kernel_size=self.kernel,
            stride=self.stride,
            padding=plan.detail["padding"],
            padding_mode=self.padding_mode,
            dilation=self.dilation,
            bias=self.bias,
        )
        initialise(layer.weight, layer.bias, self.init, *self.window_fans(plan.input.depth))
        return layer


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
