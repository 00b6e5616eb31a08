"""Layers that keep or reshape the volume: input, activations, dropout, batchnorm,
groupnorm, layernorm, flatten."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cnnzoo.layers.registry import get_layer_type, register_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Where, choice_kind, float_kind, int_kind, optional, param

if TYPE_CHECKING:
    from torch import nn


@register_layer("input", doc="the image volume fed to the network")
@dataclass(frozen=True, kw_only=True)
class InputSpec(LayerSpec):
    is_input = True

    width: int = param(kind=int_kind(1), doc="image width W")
    height: int = param(kind=int_kind(1), doc="image height H")
    depth: int = param(kind=int_kind(1), doc="channels D (1 grey, 3 RGB)")

    @staticmethod
    def of(volume: Volume) -> InputSpec:
        return InputSpec(width=volume.width, height=volume.height, depth=volume.depth)

    @property
    def volume(self) -> Volume:
        return Volume(self.width, self.height, self.depth)

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        return Inferred(output=self.volume, label="input")

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.Identity()


@dataclass(frozen=True, kw_only=True)
class _Activation(LayerSpec):
    """Elementwise nonlinearity; the volume is unchanged."""

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        return Inferred(output=inp, label=self.label())

    def label(self) -> str:
        return self.type_name


def _simple_activation(name: str, module: str, doc: str) -> None:
    """Register `name` as the torch module `torch.nn.<module>` without arguments."""

    @register_layer(name, doc=doc)
    @dataclass(frozen=True, kw_only=True)
    class Spec(_Activation):
        def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
            from torch import nn

            return getattr(nn, module)()

    Spec.__name__ = Spec.__qualname__ = f"{module}Spec"


ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "relu6",
               "hardswish", "hardsigmoid")

for _name, _module, _doc in (
    ("relu", "ReLU", "max(0, x)"),
    ("gelu", "GELU", "Gaussian error linear unit"),
    ("silu", "SiLU", "x * sigmoid(x) (swish)"),
    ("tanh", "Tanh", "hyperbolic tangent"),
    ("sigmoid", "Sigmoid", "logistic sigmoid"),
    ("relu6", "ReLU6", "min(max(0, x), 6) (MobileNetV2)"),
    ("hardswish", "Hardswish", "x * relu6(x + 3) / 6 (MobileNetV3)"),
    ("hardsigmoid", "Hardsigmoid", "relu6(x + 3) / 6 (MobileNetV3's gates)"),
):
    _simple_activation(_name, _module, _doc)


@register_layer("leaky_relu", primary="slope", doc="x if x > 0 else slope * x")
@dataclass(frozen=True, kw_only=True)
class LeakyReluSpec(_Activation):
    slope: float = param(0.01, kind=float_kind(0.0), doc="slope for negative inputs")

    def label(self) -> str:
        return f"leaky_relu {self.slope:g}"

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.LeakyReLU(self.slope)


@register_layer("elu", primary="alpha", doc="x if x > 0 else alpha * (exp(x) - 1)")
@dataclass(frozen=True, kw_only=True)
class EluSpec(_Activation):
    alpha: float = param(1.0, kind=float_kind(0.0), doc="saturation value for negative inputs")

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.ELU(self.alpha)




@register_layer("dropout", primary="p", doc="zero each value with probability p while training")
@dataclass(frozen=True, kw_only=True)
class DropoutSpec(LayerSpec):
    p: float = param(0.5, kind=float_kind(0.0, below=1.0), doc="drop probability")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        return Inferred(output=inp, label=f"dropout {self.p:g}")

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.Dropout(self.p)


@register_layer("batchnorm", doc="normalise each channel over the batch, then scale and shift")
@dataclass(frozen=True, kw_only=True)
class BatchNormSpec(LayerSpec):
    momentum: float = param(0.1, kind=float_kind(0.0, 1.0), doc="running statistics momentum")
    eps: float = param(1e-5, kind=float_kind(0.0), doc="added to the variance")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        return Inferred(output=inp, label="batchnorm", params=2 * inp.depth)

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        norm = nn.BatchNorm1d if plan.input.flat else nn.BatchNorm2d
        return norm(plan.input.depth, eps=self.eps, momentum=self.momentum)


@register_layer("groupnorm", primary="groups",
                doc="normalise each image over groups of channels, then scale and shift")
@dataclass(frozen=True, kw_only=True)
class GroupNormSpec(LayerSpec):
    groups: int = param(32, kind=int_kind(1), doc="channel groups; must divide the depth")
    eps: float = param(1e-5, kind=float_kind(0.0), doc="added to the variance")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if inp.depth % self.groups:
            divisors = [g for g in range(1, inp.depth + 1) if inp.depth % g == 0]
            nearest = min(divisors, key=lambda g: abs(g - self.groups))
            raise where.error(
                f"groups {self.groups} does not divide the depth {inp.depth} of its input "
                f"{inp} (after {context.after})",
                "groups",
                fix=f"use a divisor of {inp.depth}, e.g. groups: {nearest}",
            )
        return Inferred(output=inp, label=f"groupnorm {self.groups}", params=2 * inp.depth)

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.GroupNorm(self.groups, plan.input.depth, eps=self.eps)


@register_layer("layernorm",
                doc="normalise each image over its whole volume, then scale and shift channels")
@dataclass(frozen=True, kw_only=True)
class LayerNormSpec(LayerSpec):
    eps: float = param(1e-5, kind=float_kind(0.0), doc="added to the variance")

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        return Inferred(output=inp, label="layernorm", params=2 * inp.depth)

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        # One group is the whole volume (Wu and He's layer norm for images), with a
        # scale and shift per channel as batchnorm has; a vector is one group too.
        return nn.GroupNorm(1, plan.input.depth, eps=self.eps)


@register_layer("flatten", doc="the volume as one vector of W*H*D values")
@dataclass(frozen=True, kw_only=True)
class FlattenSpec(LayerSpec):
    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        return Inferred(output=Volume.vector(inp.numel), label="flatten")

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from torch import nn

        return nn.Flatten()


ACTIVATION = optional(choice_kind(ACTIVATIONS))  # the `activation:` key of conv, local, fc


@dataclass(frozen=True, kw_only=True)
class ActivationShorthand(LayerSpec):
    """A layer with an `activation:` key (conv, local, fc): it desugars to itself and
    the activation as a layer of its own right after it, as ConvNetJS does."""

    def desugar(self) -> list[LayerSpec]:
        activation = getattr(self, "activation", None)  # each subclass declares the key
        if activation is None:
            return [self]
        return [replace(self, activation=None), get_layer_type(activation)()]
