"""The reconstruction decoder of a capsule network (Sabour et al. 2017, section 4.1).

A side branch: it reads the capsules, reconstructs the input image from the one
capsule that is the true class's in training (the longest one otherwise), and
passes the capsules on unchanged. Its weighted sum-squared error is added to the
training loss by the network (`Network.auxiliary_loss`), which gives the
decoder the images and the labels. It is a layer, not a separate config section,
so that the summary, the parameter count and the weights file treat it like any
other layer, with its place in the stack showing which capsules it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Kind, Where, float_kind, param

if TYPE_CHECKING:
    from torch import nn


def _units_kind() -> Kind:
    def parse(value: Any, key: str, where: Where) -> tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
        ):
            raise where.error(
                f"{key} must be a list of positive integers (hidden layer widths). "
                f"Received: {key}={value!r}", key, fix=f"write e.g. {key}: [512, 1024]",
            )
        return tuple(value)

    def schema() -> dict[str, Any]:
        item = {"type": "integer", "minimum": 1}
        return {"oneOf": [item, {"type": "array", "items": item}]}

    return Kind("list of ints", parse, schema, list)


@register_layer(
    "decoder", primary="units",
    doc="reconstructs the image from the capsules (training adds its weighted error); passes "
    "the capsules on",
)
@dataclass(frozen=True, kw_only=True)
class DecoderSpec(LayerSpec):
    units: tuple[int, ...] = param(
        (512, 1024), kind=_units_kind(),
        doc="hidden fc widths (relu); a last sigmoid fc gives the image's W*H*D pixels",
    )
    weight: float = param(
        0.0005, kind=float_kind(0.0),
        doc="weight of the sum-squared reconstruction error in the training loss",
    )

    def widths(self, inp: Volume, image: Volume) -> list[int]:
        return [inp.numel, *self.units, image.numel]

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if not (inp.capsule_dim and inp.flat):
            raise where.error(
                f"decoder reads a vector of capsules, but its input is {inp} (after "
                f"{context.after})", fix="put it right after a capsules layer",
            )
        if context.nested:
            raise where.error("decoder must be a top-level layer: the network gives it the "
                              "images and labels", fix="move it out of the nested stack")
        widths = self.widths(inp, context.image)
        params = sum(a * b + b for a, b in pairwise(widths))
        return Inferred(
            output=inp,
            label=f"decoder {'-'.join(map(str, widths[1:]))}, x{self.weight:g}",
            params=params,
            macs=sum(a * b for a, b in pairwise(widths)),
            detail={"image": context.image.torch_shape()},
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from cnnzoo.layers.capsule_modules import Decoder

        widths = self.widths(plan.input, Volume(*plan.detail["image"][::-1]))
        return Decoder(widths, plan.input.capsule_dim or 1, plan.detail["image"], self.weight)
