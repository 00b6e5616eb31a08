"""The locally-connected layer: a convolution's windows without its weight sharing.

Each output position looks at the same small window a convolution would, but has
filters of its own. That keeps local connectivity and drops parameter sharing:
useful when the input is aligned and different places need different detectors
(centred faces, as in DeepFace), at the price of one filter bank per position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.conv import WindowSpec, _effective
from cnnzoo.layers.init import initialise
from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, PlanContext
from cnnzoo.utils.params import Where, bool_kind, param

if TYPE_CHECKING:
    from torch import nn


@register_layer(
    "local", primary="filters",
    doc="locally connected: conv's windows, but every output position has its own filters",
)
@dataclass(frozen=True, kw_only=True)
class LocalSpec(WindowSpec):
    bias: bool = param(True, kind=bool_kind(), doc="add a learned bias per filter and position")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        padding, (out_h, out_w) = self.window_geometry(inp, where, context)
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
        from cnnzoo.layers.modules import LocallyConnected2d

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
