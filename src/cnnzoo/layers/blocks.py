"""Layers made of layers: residual blocks and repeated stacks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cnnzoo.layers.basic import BatchNormSpec
from cnnzoo.layers.conv import ConvSpec
from cnnzoo.layers.registry import LAYERS, register_layer
from cnnzoo.layers.shapes import Volume, window_output
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Where, bool_kind, choice_kind, int_kind, param

if TYPE_CHECKING:
    from torch import nn


@register_layer("residual", primary="layers", doc="output = layers(x) + shortcut(x) (ResNet)")
@dataclass(frozen=True, kw_only=True)
class ResidualSpec(LayerSpec):
    layers: tuple[LayerSpec, ...] = param(kind=LAYERS, doc="the residual branch, a nested stack")
    shortcut: str = param(
        "auto", kind=choice_kind(["auto", "identity", "conv"]),
        doc="auto: identity when the shapes match, else a 1x1 conv with the stride that makes "
        "them match",
    )
    shortcut_batchnorm: bool = param(
        False, kind=bool_kind(), doc="follow a conv shortcut with batchnorm (ResNet option B)"
    )

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        body = context.plan_children(self.layers, inp, where)
        out = body[-1].output
        shortcut_specs = self._shortcut_specs(inp, out, where)
        shortcut = tuple(
            replace(p, label=f"shortcut {p.label}")
            for p in context.plan_children(
                shortcut_specs, inp, where, key="shortcut", start=len(body)
            )
        )
        kind = "identity" if not shortcut_specs else shortcut[0].label.removeprefix("shortcut ")
        return Inferred(
            output=out,
            label=f"residual ({kind})",
            params=sum(p.params for p in (*body, *shortcut)),
            macs=sum(p.macs for p in (*body, *shortcut)),
            children=(*body, *shortcut),
            detail={"body": len(body)},
        )

    def _shortcut_specs(self, inp: Volume, out: Volume, where: Where) -> list[LayerSpec]:
        if self.shortcut == "identity" or (self.shortcut == "auto" and inp == out):
            if inp != out:
                raise where.error(
                    f"an identity shortcut needs the branch to keep the volume, but it maps "
                    f"{inp} to {out}",
                    "shortcut",
                    fix="use shortcut: auto (a 1x1 conv) or make the branch keep the shape",
                )
            return []
        if inp.flat or out.flat:
            raise where.error(
                f"a conv shortcut needs volumes, but the branch maps {inp} to {out}", "shortcut"
            )
        stride = (_stride_between(inp.height, out.height), _stride_between(inp.width, out.width))
        if None in stride:
            raise where.error(
                f"no 1x1 convolution maps {inp} to {out}: the branch changes W x H by a factor "
                "that is not a whole stride",
                "shortcut",
                fix="make the branch downsample by an integer stride ('padding: same' helps)",
            )
        conv = ConvSpec(
            filters=out.depth, kernel=(1, 1), stride=stride, bias=not self.shortcut_batchnorm
        )
        return [conv, BatchNormSpec()] if self.shortcut_batchnorm else [conv]

    def build(self, plan: LayerPlan, build_child: Callable[[LayerPlan], nn.Module]) -> nn.Module:
        from torch import nn

        from cnnzoo.layers.modules import Residual

        split = plan.detail["body"]
        body = nn.Sequential(*(build_child(p) for p in plan.children[:split]))
        shortcut_plans = plan.children[split:]
        shortcut = (
            nn.Sequential(*(build_child(p) for p in shortcut_plans))
            if shortcut_plans
            else nn.Identity()
        )
        return Residual(body, shortcut)


def _stride_between(size: int, out: int) -> int | None:
    """The stride of a 1x1 window that turns `size` pixels into `out`, if one exists."""
    stride = max(1, math.ceil(size / out))
    return stride if window_output(size, 1, stride, 0) == out else None


@register_layer("repeat", doc="the nested stack applied `times` times")
@dataclass(frozen=True, kw_only=True)
class RepeatSpec(LayerSpec):
    times: int = param(kind=int_kind(1, 1000), doc="how many copies, applied one after another")
    layers: tuple[LayerSpec, ...] = param(kind=LAYERS, doc="the stack to repeat")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        children = context.plan_children(self.layers, inp, where, times=self.times)
        return Inferred(
            output=children[-1].output,
            label=f"repeat x{self.times}",
            params=sum(p.params for p in children),
            macs=sum(p.macs for p in children),
            children=children,
        )

    def build(self, plan: LayerPlan, build_child: Callable[[LayerPlan], nn.Module]) -> nn.Module:
        from torch import nn

        return nn.Sequential(*(build_child(p) for p in plan.children))
