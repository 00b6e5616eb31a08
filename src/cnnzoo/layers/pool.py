"""Pooling: downsample each channel with a max or an average over a window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import Pair, Volume, ceil_window_output, conv_output, format_pair
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Where, bool_kind, choice_kind, optional, pair_kind, param

if TYPE_CHECKING:
    from torch import nn


@register_layer("pool", primary="size", doc="max or average over each window, per channel")
@dataclass(frozen=True, kw_only=True)
class PoolSpec(LayerSpec):
    kind: str = param("max", kind=choice_kind(["max", "avg"]), doc="max or avg")
    size: Pair = param((2, 2), kind=pair_kind(), doc="window F (int or [h, w])")
    stride: Pair | None = param(
        None, kind=optional(pair_kind()), doc="step S (default: size)"
    )
    padding: Pair = param((0, 0), kind=pair_kind(minimum=0), doc="P pixels per side")
    ceil: bool = param(
        False, kind=bool_kind(),
        doc="round the output size up (torch's ceil_mode): a last window that hangs over "
        "the edge still counts (GoogLeNet, SqueezeNet)",
    )

    def check(self, where: Where) -> None:
        for p, k in zip(self.padding, self.size, strict=True):
            if 2 * p > k:
                raise where.error(
                    f"padding {format_pair(self.padding)} is more than half the window "
                    f"{format_pair(self.size)}",
                    "padding",
                    fix="pooling padding must be at most size/2",
                )

    @property
    def step(self) -> Pair:
        return self.size if self.stride is None else self.stride

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if inp.flat:
            raise where.error(
                f"pool needs a volume but its input is a flat vector of {inp.depth} values "
                f"(after {context.after})",
                fix="move the pool before the fc/flatten layers",
            )
        ph, pw = self.padding
        if self.ceil:
            out_h, out_w = (ceil_window_output(n, k, s, p) for n, k, s, p in
                            zip(inp.size, self.size, self.step, self.padding, strict=True))
        else:
            out_h, out_w = conv_output(inp.size, self.size, self.step, (ph, ph, pw, pw))
        if min(out_h, out_w) < 1:
            raise where.error(
                f"window {format_pair(self.size)} is larger than its input {inp} "
                f"(after {context.after})",
                "size",
                fix="use a smaller pool or remove it",
            )
        label = f"pool {self.kind} {format_pair(self.size)}/{_one(self.step)}"
        if any(self.padding):
            label += f" pad {_one(self.padding)}"
        if self.ceil:
            label += " ceil"
        return Inferred(
            output=Volume(out_w, out_h, inp.depth),
            label=label,
            window=(self.size, self.step),
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        if self.kind == "max":
            return nn.MaxPool2d(self.size, self.step, self.padding, ceil_mode=self.ceil)
        return nn.AvgPool2d(self.size, self.step, self.padding, ceil_mode=self.ceil)


def _one(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else format_pair(pair)


@register_layer("global_pool", primary="kind", doc="one value per channel: 1 x 1 x D")
@dataclass(frozen=True, kw_only=True)
class GlobalPoolSpec(LayerSpec):
    kind: str = param("avg", kind=choice_kind(["avg", "max"]), doc="avg or max")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if inp.flat:
            raise where.error(
                f"global_pool needs a volume but its input is a flat vector (after {context.after})"
            )
        return Inferred(
            output=Volume(1, 1, inp.depth), label=f"global_pool {self.kind}", global_window=True
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.AdaptiveAvgPool2d(1) if self.kind == "avg" else nn.AdaptiveMaxPool2d(1)
