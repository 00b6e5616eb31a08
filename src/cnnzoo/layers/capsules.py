"""Capsule layers (Sabour, Frosst and Hinton 2017, "Dynamic Routing Between Capsules").

A capsule is a small vector whose length says how likely an entity is present and
whose direction says how it looks (its pose). `primary_capsules` is a convolution
whose output channels are grouped into capsules and squashed; `capsules` maps every
input capsule to every output capsule with its own matrix W_ij and lets the
predictions agree by routing (the paper's Procedure 1); `length` turns capsules into
class scores, the lengths. Capsule volumes print as W x H x (capsules x dim).

Tensor layout: capsule c at a position holds channels c*dim .. c*dim+dim-1, so a
primary capsule volume is an ordinary (B, C, H, W) tensor, and a vector of capsules
is (B, capsules*dim): every other layer, hook and picture sees what it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnzoo.layers.conv import PADDING, ConvSpec
from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import Pair, Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Where, bool_kind, int_kind, optional, pair_kind, param

if TYPE_CHECKING:
    from torch import nn

def routing_macs(inputs: int, outputs: int, dim: int, in_dim: int, iterations: int) -> int:
    """Mult-adds of one image through `Capsules`: the predictions W_ij u_i, the weighted
    sums s_j of every iteration and the agreements of all but the last."""
    pairs = inputs * outputs
    return pairs * dim * in_dim + iterations * pairs * dim + (iterations - 1) * pairs * dim


@register_layer(
    "primary_capsules", primary="capsules",
    doc="a conv whose output is grouped into capsules of dim numbers, squashed",
)
@dataclass(frozen=True, kw_only=True)
class PrimaryCapsulesSpec(LayerSpec):
    capsules: int = param(kind=int_kind(1), doc="capsule channels: capsules at each position")
    dim: int = param(8, kind=int_kind(1), doc="numbers per capsule (its pose vector)")
    kernel: Pair = param((3, 3), kind=pair_kind(), doc="filter size F (int or [h, w])")
    stride: Pair = param((1, 1), kind=pair_kind(), doc="step S between windows")
    padding: Pair | str = param(
        (0, 0), kind=PADDING, doc="P pixels per side (int or [h, w]), same or valid"
    )
    bias: bool = param(True, kind=bool_kind(), doc="add a learned bias per filter")

    def conv(self) -> ConvSpec:
        """The convolution underneath: capsules * dim filters."""
        return ConvSpec(filters=self.capsules * self.dim, kernel=self.kernel,
                        stride=self.stride, padding=self.padding, bias=self.bias)

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        conv = self.conv().infer(inp, where, context)
        out = conv.output
        return Inferred(
            output=Volume(out.width, out.height, out.depth, capsule_dim=self.dim),
            label=f"primary_capsules {conv.label.removeprefix('conv ').rsplit(',', 1)[0]}, "
            f"{self.capsules}x{self.dim}D",
            params=conv.params,
            macs=conv.macs,
            window=conv.window,
            dense_params=conv.dense_params,
            detail=conv.detail,
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from cnnzoo.layers.capsule_modules import PrimaryCapsules

        return PrimaryCapsules(self.conv().build(plan, build_child), self.dim)


@register_layer(
    "capsules", primary="units",
    doc="capsules routed by agreement: a matrix W_ij per input and output capsule, no bias",
)
@dataclass(frozen=True, kw_only=True)
class CapsulesSpec(LayerSpec):
    units: int = param(kind=int_kind(1), doc="output capsules (one per class for the last)")
    dim: int = param(16, kind=int_kind(1), doc="numbers per output capsule")
    routing: int = param(3, kind=int_kind(1), doc="routing-by-agreement iterations (>= 1)")
    in_dim: int | None = param(
        None, kind=optional(int_kind(1)),
        doc="after a plain conv only: numbers per input capsule (the conv's filters in groups "
        "of in_dim, squashed)",
    )

    def _input_capsules(self, inp: Volume, where: Where, context: PlanContext) -> tuple[int, int]:
        """(number of input capsules, numbers per input capsule), or a config error."""
        if inp.capsule_dim:
            if self.in_dim is not None and self.in_dim != inp.capsule_dim:
                raise where.error(
                    f"in_dim {self.in_dim} differs from the {inp.capsule_dim} numbers per "
                    f"capsule of its input {inp} (after {context.after})", "in_dim",
                    fix="remove in_dim: capsule inputs bring their own",
                )
            return inp.width * inp.height * inp.capsules, inp.capsule_dim
        if context.previous != "conv":
            raise where.error(
                f"capsules needs capsules (or a conv) as its input, but {context.after} is "
                f"neither a capsule layer nor a conv",
                fix="put a primary_capsules layer before it (or a conv, with in_dim)",
            )
        if self.in_dim is None:
            raise where.error(
                f"the input {inp} (after {context.after}) is a plain conv volume: how many "
                "numbers make one input capsule is not known",
                fix="set in_dim, or use primary_capsules instead of the conv",
            )
        if inp.depth % self.in_dim:
            raise where.error(
                f"in_dim {self.in_dim} does not divide the {inp.depth} filters of "
                f"{context.after}. Received: in_dim={self.in_dim}", "in_dim",
                fix="use an in_dim that divides the filters, or change the conv's filters",
            )
        return inp.numel // self.in_dim, self.in_dim

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        inputs, in_dim = self._input_capsules(inp, where, context)
        out = Volume(1, 1, self.units * self.dim, flat=True, capsule_dim=self.dim)
        params = inputs * self.units * self.dim * in_dim
        return Inferred(
            output=out,
            label=f"capsules {self.units}x{self.dim}D from {inputs:,}x{in_dim}D, "
            f"routing {self.routing}",
            params=params,
            macs=routing_macs(inputs, self.units, self.dim, in_dim, self.routing),
            global_window=not inp.flat,
            dense_params=inp.numel * out.numel,
            detail={"inputs": inputs, "in_dim": in_dim, "squash_input": not inp.capsule_dim},
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from cnnzoo.layers.capsule_modules import Capsules

        d = plan.detail
        return Capsules(d["inputs"], d["in_dim"], self.units, self.dim, self.routing,
                        squash_input=d["squash_input"])


@register_layer("length", doc="each capsule's length: the class scores of a capsule layer")
@dataclass(frozen=True, kw_only=True)
class LengthSpec(LayerSpec):
    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if not inp.capsule_dim:
            raise where.error(
                f"length needs capsules, but its input {inp} (after {context.after}) is a plain "
                "volume", fix="put it after a capsules layer",
            )
        if inp.flat:
            out = Volume.vector(inp.capsules)
        else:
            out = Volume(inp.width, inp.height, inp.capsules)
        return Inferred(output=out, label="length")

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from cnnzoo.layers.capsule_modules import CapsuleLength

        return CapsuleLength(plan.input.capsule_dim or 1)
