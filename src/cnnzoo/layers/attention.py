"""Channel attention: `squeeze_excite` (SENet; in MobileNetV3 and EfficientNet), which
rescales each channel by a gate computed from the whole volume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.basic import ACTIVATIONS
from cnnzoo.layers.registry import get_layer_type, register_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Where, choice_kind, int_kind, param

if TYPE_CHECKING:
    from torch import nn


@register_layer("squeeze_excite", primary="ratio",
                doc="scale each channel by a gate from its average (squeeze-and-excitation)")
@dataclass(frozen=True, kw_only=True)
class SqueezeExciteSpec(LayerSpec):
    ratio: int = param(16, kind=int_kind(1), doc="the hidden fc has depth / ratio units")
    activation: str = param("relu", kind=choice_kind(ACTIVATIONS),
                            doc="after the first fc (D -> D/ratio)")
    gate: str = param("sigmoid", kind=choice_kind(ACTIVATIONS),
                      doc="after the second fc (-> D): the scale of each channel")
    divisor: int = param(1, kind=int_kind(1),
                         doc="round the hidden units to a multiple of this (8 in MobileNetV3)")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if inp.flat:
            raise where.error(
                f"squeeze_excite rescales the channels of a volume, but its input is the "
                f"vector {inp} (after {context.after})",
                fix="put squeeze_excite before the first fc or flatten",
            )
        hidden = hidden_units(inp.depth // self.ratio, self.divisor)
        if hidden < 1:
            raise where.error(
                f"ratio {self.ratio} is larger than the depth {inp.depth} of its input {inp} "
                f"(after {context.after}): the hidden layer would have no units",
                "ratio",
                fix=f"use a ratio of at most {inp.depth}",
            )
        return Inferred(
            output=inp,
            label=f"squeeze_excite {inp.depth}->{hidden}->{inp.depth}",
            params=2 * inp.depth * hidden + hidden + inp.depth,
            macs=2 * inp.depth * hidden,  # the two fc layers; the pooling and scale add none
            detail={"hidden": hidden},
        )

    def build(self, plan: LayerPlan, build_child: Callable[[LayerPlan], nn.Module]) -> nn.Module:
        from cnnzoo.layers.modules import SqueezeExcite

        activation = get_layer_type(self.activation)().build(plan, build_child)
        gate = get_layer_type(self.gate)().build(plan, build_child)
        return SqueezeExcite(plan.input.depth, plan.detail["hidden"], activation, gate)


def hidden_units(units: int, divisor: int) -> int:
    """`units` rounded to the nearest multiple of `divisor`, never below it nor more than
    10% down: torchvision's `_make_divisible`, which MobileNetV3's SE blocks use."""
    if divisor == 1:
        return units
    rounded = max(divisor, (units + divisor // 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * units else rounded
