"""The fully connected layer: every input value connected to every output unit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.basic import ACTIVATION, ActivationShorthand
from cnnzoo.layers.init import INIT_DOC, INITS, initialise
from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, PlanContext
from cnnzoo.utils.params import Where, bool_kind, choice_kind, int_kind, param

if TYPE_CHECKING:
    from torch import nn


@register_layer("fc", primary="units", doc="fully connected: a volume input is flattened first")
@dataclass(frozen=True, kw_only=True)
class FcSpec(ActivationShorthand):
    units: int = param(kind=int_kind(1), doc="number of output units")
    bias: bool = param(True, kind=bool_kind(), doc="add a learned bias per unit")
    init: str = param("default", kind=choice_kind(INITS), doc=INIT_DOC)
    activation: str | None = param(None, kind=ACTIVATION, doc="shorthand for a layer after this")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        params = inp.numel * self.units + (self.units if self.bias else 0)
        return Inferred(
            output=Volume.vector(self.units),
            label=f"fc {self.units}",
            params=params,
            macs=inp.numel * self.units,
            global_window=not inp.flat,
            dense_params=params,
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from cnnzoo.layers.modules import Linear

        linear = Linear(plan.input.numel, self.units, bias=self.bias)
        initialise(linear.weight, linear.bias, self.init, plan.input.numel, self.units)
        return linear
