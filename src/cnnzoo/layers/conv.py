"""The convolutional layer: a small window of weights shared across every position."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.errors import did_you_mean
from cnnzoo.layers.basic import ACTIVATION, activation_spec
from cnnzoo.layers.padding import PADDING_MODES, max_padding, pad
from cnnzoo.params import (
    Kind,
    Where,
    bool_kind,
    choice_kind,
    dump_pair,
    int_kind,
    pair_kind,
    param,
)
from cnnzoo.plan import LayerPlan, Planner
from cnnzoo.registry import Inferred, LayerSpec, register_layer
from cnnzoo.shapes import (
    Padding4,
    Pair,
    Volume,
    conv_output,
    effective_kernel,
    format_pair,
    resolve_padding,
)


def _padding_kind() -> Kind:
    pair = pair_kind(minimum=0)

    def parse(value: Any, key: str, where: Where) -> Pair | str:
        if value in ("same", "valid"):
            return value
        if isinstance(value, str):
            raise where.error(
                f"{key} must be an integer, a [height, width] pair, same or valid. "
                f"Received: {key}={value!r}{did_you_mean(value, ['same', 'valid'])}",
                key,
            )
        return pair.parse(value, key, where)

    def schema() -> dict[str, Any]:
        return {"oneOf": [pair.schema(), {"enum": ["same", "valid"]}]}

    return Kind("int, [h, w], same or valid", parse, schema, dump_pair)


PADDING = _padding_kind()


@dataclass(frozen=True, kw_only=True)
class WindowSpec(LayerSpec):
    """Parameters shared by every sliding-window layer with weights (conv, local)."""

    filters: int = param(kind=int_kind(1), doc="number of filters: the output depth D'")
    kernel: Pair = param((3, 3), kind=pair_kind(), doc="filter size F (int or [h, w])")
    stride: Pair = param((1, 1), kind=pair_kind(), doc="step S between windows")
    padding: Pair | str = param(
        (0, 0), kind=PADDING, doc="P pixels per side (int or [h, w]), same or valid"
    )
    padding_mode: str = param(
        "zeros", kind=choice_kind(PADDING_MODES), doc="what the padding holds"
    )
    dilation: Pair = param((1, 1), kind=pair_kind(), doc="spacing between filter taps")
    bias: bool = param(True, kind=bool_kind(), doc="add a learned bias per filter")
    activation: str | None = param(None, kind=ACTIVATION, doc="shorthand for a layer after this")

    def desugar(self) -> list[LayerSpec]:
        if self.activation is None:
            return [self]
        from dataclasses import replace

        return [replace(self, activation=None), activation_spec(self.activation)]

    def window_geometry(self, inp: Volume, where: Where, planner: Planner) -> tuple[Padding4, Pair]:
        """Resolved padding and output (height, width), with errors that say what to change."""
        if inp.flat:
            raise where.error(
                f"{self.type_name} needs a volume but its input is a flat vector of "
                f"{inp.depth} values (after {planner.after})",
                fix=f"move the {self.type_name} before the fc/flatten layers",
            )
        padding = resolve_padding(self.padding, inp.size, self.kernel, self.stride, self.dilation)
        top, bottom, left, right = padding
        for axis, size, (before, after) in (
            ("height", inp.height, (top, bottom)),
            ("width", inp.width, (left, right)),
        ):
            limit = max_padding(self.padding_mode, size)
            if limit is not None and max(before, after) > limit:
                raise where.error(
                    f"{self.padding_mode} padding of {max(before, after)} needs an input at "
                    f"least {max(before, after) + (self.padding_mode == 'reflect')} pixels in "
                    f"{axis}, got {inp} (after {planner.after})",
                    "padding",
                    fix="use less padding or padding_mode: replicate or zeros",
                )
        out = conv_output(inp.size, self.kernel, self.stride, padding, self.dilation)
        if min(out) < 1:
            k_eff = (
                effective_kernel(self.kernel[0], self.dilation[0]),
                effective_kernel(self.kernel[1], self.dilation[1]),
            )
            dilated = "" if self.dilation == (1, 1) else f" (dilated to {format_pair(k_eff)})"
            raise where.error(
                f"kernel {format_pair(self.kernel)}{dilated} is larger than its input {inp} "
                f"(after {planner.after})",
                "kernel",
                fix="use padding or a smaller kernel",
            )
        return padding, out

    def describe(self, padding: Padding4) -> str:
        text = f"{format_pair(self.kernel)}/{_pair_text(self.stride)}"
        if self.padding in ("same", "valid"):
            text += f" {self.padding}"
        elif any(padding):
            text += f" pad {_pair_text((padding[0], padding[2]))}"
        if any(padding) and self.padding_mode != "zeros":
            text += f" {self.padding_mode}"
        if self.dilation != (1, 1):
            text += f" dil {_pair_text(self.dilation)}"
        return text


def _pair_text(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else format_pair(pair)


@register_layer(
    "conv", primary="filters", doc="2-D convolution: shared filters slid over the volume"
)
@dataclass(frozen=True, kw_only=True)
class ConvSpec(WindowSpec):
    groups: int = param(1, kind=int_kind(1), doc="split input and filters into this many groups")

    def check(self, where: Where) -> None:
        if self.filters % self.groups:
            raise where.error(
                f"filters ({self.filters}) must be a multiple of groups ({self.groups})", "groups"
            )

    def infer(self, inp: Volume, where: Where, planner: Planner) -> Inferred:
        padding, (out_h, out_w) = self.window_geometry(inp, where, planner)
        if inp.depth % self.groups:
            raise where.error(
                f"the input depth {inp.depth} (after {planner.after}) is not a multiple of "
                f"groups={self.groups}",
                "groups",
            )
        out = Volume(out_w, out_h, self.filters)
        fan_in = inp.depth // self.groups * self.kernel[0] * self.kernel[1]
        bias = self.filters if self.bias else 0
        groups = f" g{self.groups}" if self.groups > 1 else ""
        return Inferred(
            output=out,
            label=f"conv {self.describe(padding)}{groups}, {self.filters}",
            params=self.filters * fan_in + bias,
            macs=out_w * out_h * self.filters * fan_in,
            window=(_effective(self.kernel, self.dilation), self.stride),
            dense_params=inp.numel * out.numel + (out.numel if self.bias else 0),
            detail={"padding": padding},
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        return Conv2d(
            plan.input.depth,
            self.filters,
            kernel_size=self.kernel,
            stride=self.stride,
            padding=plan.detail["padding"],
            padding_mode=self.padding_mode,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias,
        )


def _effective(kernel: Pair, dilation: Pair) -> Pair:
    return (effective_kernel(kernel[0], dilation[0]), effective_kernel(kernel[1], dilation[1]))


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that takes padding as (top, bottom, left, right) in any mode.

    Symmetric zero padding is left to the convolution itself (fastest); anything
    else (TensorFlow-style 'same' with an even kernel, mirror modes) is padded first.
    The parameters and state_dict keys are those of `nn.Conv2d`.
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
    ) -> None:
        top, bottom, left, right = padding
        native = padding_mode == "zeros" and top == bottom and left == right
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_padding is not None:
            x = pad(x, self.explicit_padding, self.explicit_mode)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.explicit_padding is not None:
            text += f", pad={self.explicit_padding} {self.explicit_mode}"
        return text
