"""The convolutional layer: a small window of weights shared across every position."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnzoo.errors import did_you_mean
from cnnzoo.layers.basic import ACTIVATION, ActivationShorthand
from cnnzoo.layers.fft import MAX_SPECTRUM_VALUES, ConvShape, choose_impl
from cnnzoo.layers.init import CONV_INIT_DOC, CONV_INITS, INIT_DOC, INITS, initialise
from cnnzoo.layers.kernels import FIXED_KERNELS, depthwise_weight
from cnnzoo.layers.padding import PADDING_MODES, max_padding
from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import (
    Padding4,
    Pair,
    Volume,
    conv_output,
    effective_kernel,
    format_pair,
    resolve_padding,
)
from cnnzoo.layers.spec import Inferred, LayerPlan, PlanContext
from cnnzoo.layers.whitening import WHITEN_EPS
from cnnzoo.utils.params import (
    Kind,
    Where,
    bool_kind,
    choice_kind,
    dump_pair,
    float_kind,
    int_kind,
    optional,
    pair_kind,
    param,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


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


def _weights_kind() -> Kind:
    """A fixed kernel's name, or a list of names (a filter bank), as a tuple of names."""
    name = choice_kind(FIXED_KERNELS)

    def parse(value: Any, key: str, where: Where) -> tuple[str, ...]:
        if isinstance(value, list) and value:
            names = tuple(name.parse(v, key, where) for v in value)
            if len(set(names)) < len(names):
                raise where.error(
                    f"{key} lists a kernel twice. Received: {key}={value!r}", key,
                    fix="to apply a kernel more than once, raise filters instead",
                )
            return names
        if isinstance(value, list):
            raise where.error(f"{key} is an empty list", key, fix=f"remove {key} or name a kernel")
        return (name.parse(value, key, where),)

    def schema() -> dict[str, Any]:
        return {"oneOf": [name.schema(), {"type": "array", "items": name.schema(), "minItems": 1,
                                          "uniqueItems": True}]}

    def dump(value: tuple[str, ...]) -> str | list[str]:
        return value[0] if len(value) == 1 else list(value)

    return Kind("kernel name or list of names", parse, schema, dump)


@dataclass(frozen=True, kw_only=True)
class WindowSpec(ActivationShorthand):
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
    init: str = param("default", kind=choice_kind(INITS), doc=INIT_DOC)
    activation: str | None = param(None, kind=ACTIVATION, doc="shorthand for a layer after this")

    def window_fans(self, in_depth: int, groups: int = 1) -> tuple[int, int]:
        """(fan_in, fan_out) of one filter: taps times input channels, taps times filters."""
        taps = self.kernel[0] * self.kernel[1]
        return taps * in_depth // groups, taps * self.filters // groups

    def window_geometry(self, inp: Volume, where: Where,
                        context: PlanContext) -> tuple[Padding4, Pair]:
        """Resolved padding and output (height, width), with errors that say what to change."""
        if inp.flat:
            raise where.error(
                f"{self.type_name} needs a volume but its input is a flat vector of "
                f"{inp.depth} values (after {context.after})",
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
                    f"{axis}, got {inp} (after {context.after})",
                    "padding",
                    fix="use less padding or padding_mode: symmetric, replicate or zeros",
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
                f"(after {context.after})",
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


IMPLS = ("direct", "fft", "auto")


@register_layer(
    "conv", primary="filters", doc="2-D convolution: shared filters slid over the volume"
)
@dataclass(frozen=True, kw_only=True)
class ConvSpec(WindowSpec):
    groups: int = param(1, kind=int_kind(1), doc="split input and filters into this many groups")
    init: str = param("default", kind=choice_kind(CONV_INITS), doc=CONV_INIT_DOC)
    whiten_eps: float | None = param(
        None, kind=optional(float_kind(0.0)),
        doc=f"init: whitening's eps in 1/sqrt(eigenvalue + eps) (default {WHITEN_EPS:g}): "
        "directions with less variance than eps are damped, not blown up",
    )
    impl: str = param(
        "direct", kind=choice_kind(IMPLS),
        doc="direct, fft (a product in the frequency domain) or auto (the faster for this "
        "shape); same weights and results",
    )
    weights: tuple[str, ...] | None = param(
        None, kind=optional(_weights_kind()),
        doc="a fixed classic kernel applied to each input channel, or a list of them: "
        + ", ".join(FIXED_KERNELS),
    )
    trainable: bool | None = param(
        None, kind=optional(bool_kind()),
        doc="learn the weights (and bias); default true, but a fixed kernel (weights) and "
        "init: whitening are frozen unless true",
    )

    def check(self, where: Where) -> None:
        if self.weights is not None and self.init != "default":
            raise where.error(
                f"init: {self.init} and weights: {self.weights_text} both set the weights",
                "init",
                fix="remove init (a fixed kernel is its own initialisation) or weights",
            )
        if self.filters % self.groups:
            raise where.error(
                f"filters ({self.filters}) must be a multiple of groups ({self.groups})", "groups"
            )
        self._check_init(where)
        for name in self.weights or ():
            size = FIXED_KERNELS[name].size
            if size is not None and self.kernel != size:
                raise where.error(
                    f"weights: {name} is a {format_pair(size)} kernel, but kernel is "
                    f"{format_pair(self.kernel)}. Received: kernel={dump_pair(self.kernel)}",
                    "kernel",
                    fix=f"remove kernel or set kernel: {dump_pair(size)} (box_blur, "
                    "gaussian_blur and identity take any size)",
                )

    def _check_init(self, where: Where) -> None:
        """What init: dirac and init: whitening ask of the parameters alone."""
        if self.whiten_eps is not None and self.init != "whitening":
            raise where.error(
                f"whiten_eps is an option of init: whitening, but init is {self.init}",
                "whiten_eps", fix="remove whiten_eps or set init: whitening",
            )
        if self.whiten_eps is not None and self.whiten_eps <= 0:
            raise where.error(
                f"whiten_eps must be above 0 (it keeps 1/sqrt(eigenvalue + eps) finite). "
                f"Received: whiten_eps={self.whiten_eps:g}", "whiten_eps",
                fix=f"remove whiten_eps (default {WHITEN_EPS:g}) or set a small positive value",
            )
        if self.init == "dirac" and (self.kernel[0] % 2 == 0 or self.kernel[1] % 2 == 0):
            raise where.error(
                f"init: dirac passes each channel through a filter's centre tap, which a "
                f"kernel of {format_pair(self.kernel)} does not have", "kernel",
                fix="use an odd kernel (1, 3, 5) or another init",
            )
        if self.init != "whitening":
            return
        if self.filters % 2:
            raise where.error(
                "init: whitening makes its filters in pairs (each eigenvector of the patch "
                f"covariance and its negative), so filters must be even. "
                f"Received: filters={self.filters}", "filters",
                fix=f"set filters: {self.filters + 1}" if self.filters == 1
                else f"set filters: {self.filters - 1} or {self.filters + 1}",
            )
        if self.groups != 1:
            raise where.error(
                f"init: whitening decorrelates all of a patch's channels together, so groups "
                f"must be 1. Received: groups={self.groups}", "groups", fix="remove groups",
            )

    def _check_init_input(self, inp: Volume, where: Where, context: PlanContext,
                          groups: int) -> None:
        """What init: dirac and init: whitening ask of the layer's input."""
        if self.init == "dirac" and self.filters // groups < inp.depth // groups:
            raise where.error(
                f"init: dirac passes each of the {inp.depth} input channels (after "
                f"{context.after}) through a filter of its own, so filters must be at least "
                f"{inp.depth}. Received: filters={self.filters}", "filters",
                fix=f"set filters: {inp.depth} or more, or use another init",
            )
        if self.init != "whitening":
            return
        if context.nested or context.previous not in (None, "input"):
            seen = ("it is inside a block" if context.nested
                    else f"its input comes from {context.after}")
            raise where.error(
                "init: whitening sets the filters from the training images' patches, so the "
                f"conv must see the images, but {seen}",
                "init", fix="make this conv the first layer after input, or use another init",
            )
        size = inp.depth * self.kernel[0] * self.kernel[1]
        if self.filters > 2 * size:
            raise where.error(
                f"init: whitening has at most {2 * size} filters to give: the {size} "
                f"eigenvectors of a {format_pair(self.kernel)}x{inp.depth} patch's covariance "
                f"and their negatives. Received: filters={self.filters}", "filters",
                fix=f"set filters: {2 * size} or fewer (even), or a larger kernel",
            )

    @property
    def frozen(self) -> bool:
        """Fixed kernels and whitening filters stay fixed unless asked to learn; anything
        else learns unless told not."""
        fixed = self.weights is not None or self.init == "whitening"
        return self.trainable is False or (self.trainable is None and fixed)

    @property
    def needs_images(self) -> bool:
        return self.init == "whitening"

    def initialise_from_images(self, module: nn.Module, images: torch.Tensor) -> None:
        from cnnzoo.layers.whitening import whiten_conv

        whiten_conv(module, images, WHITEN_EPS if self.whiten_eps is None else self.whiten_eps)

    @property
    def weights_text(self) -> str:
        return "+".join(self.weights or ())

    def _groups(self, inp: Volume, where: Where, context: PlanContext) -> int:
        if self.weights is None:
            if inp.depth % self.groups:
                raise where.error(
                    f"the input depth {inp.depth} (after {context.after}) is not a multiple of "
                    f"groups={self.groups}",
                    "groups",
                )
            return self.groups
        if self.groups not in (1, inp.depth):
            raise where.error(
                f"weights: {self.weights_text} is applied to each input channel (groups = input "
                f"depth {inp.depth}), but groups is {self.groups}",
                "groups",
                fix="remove groups",
            )
        bank = inp.depth * len(self.weights)
        if self.filters % bank:
            per = max(1, self.filters // bank)
            kernels = "" if len(self.weights) == 1 else f" {len(self.weights)} kernels"
            raise where.error(
                f"weights: {self.weights_text} applies{kernels} to each of the {inp.depth} input "
                f"channels (after {context.after}), so filters must be a multiple of {bank}. "
                f"Received: filters={self.filters}",
                "filters",
                fix=f"set filters: {bank * per}",
            )
        return inp.depth

    def _impl(self, shape: ConvShape, where: Where) -> str:
        if self.impl == "auto":
            return choose_impl(shape)
        if self.impl == "fft" and shape.spectrum_values() > MAX_SPECTRUM_VALUES:
            fh, fw = shape.fft_grid
            size = shape.spectrum_values() * 8 / 2**30
            raise where.error(
                f"impl: fft transforms each of the {self.filters}x{shape.channels // shape.groups}"
                f" filter channels to the padded input's {fw}x{fh}, {size:.1f} GiB of spectra "
                f"(the most fft accepts is {MAX_SPECTRUM_VALUES * 8 / 2**30:g} GiB)",
                "impl",
                fix="use impl: direct, or impl: auto (which uses fft only where it fits)",
            )
        return self.impl

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        padding, (out_h, out_w) = self.window_geometry(inp, where, context)
        groups = self._groups(inp, where, context)
        self._check_init_input(inp, where, context, groups)
        top, bottom, left, right = padding
        shape = ConvShape(
            channels=inp.depth,
            filters=self.filters,
            groups=groups,
            padded=(inp.height + top + bottom, inp.width + left + right),
            kernel=self.kernel,
            stride=self.stride,
            dilation=self.dilation,
        )
        impl = self._impl(shape, where)
        out = Volume(out_w, out_h, self.filters)
        fan_in = inp.depth // groups * self.kernel[0] * self.kernel[1]
        params = self.filters * fan_in + (self.filters if self.bias else 0)
        label = f"conv {self.describe(padding)}" + (f" g{groups}" if groups > 1 else "")
        label += f", {self.filters}"
        if self.weights is not None:
            label += f" {self.weights_text}"
        if self.init in ("dirac", "whitening"):
            label += f" {self.init}"
        if self.frozen:
            label += " frozen"
        if self.impl != "direct":
            label += f" {impl}" if self.impl == impl else f" {self.impl}: {impl}"
        return Inferred(
            output=out,
            label=label,
            params=params,
            # The convolution's multiply-adds whatever computes it: the cost of the
            # operation, not of one algorithm for it.
            macs=out_w * out_h * self.filters * fan_in,
            window=(_effective(self.kernel, self.dilation), self.stride),
            dense_params=inp.numel * out.numel + (out.numel if self.bias else 0),
            detail={
                "padding": padding,
                "groups": groups,
                "impl": impl,
                "frozen_params": params if self.frozen else 0,
            },
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        import torch

        from cnnzoo.layers.modules import Conv2d

        conv = Conv2d(
            plan.input.depth,
            self.filters,
            kernel_size=self.kernel,
            stride=self.stride,
            padding=plan.detail["padding"],
            padding_mode=self.padding_mode,
            dilation=self.dilation,
            groups=plan.detail["groups"],
            bias=self.bias,
            impl=plan.detail["impl"],
        )
        fan_in, fan_out = self.window_fans(plan.input.depth, plan.detail["groups"])
        initialise(conv.weight, conv.bias, self.init, fan_in, fan_out, plan.detail["groups"])
        if self.weights is not None:
            with torch.no_grad():
                conv.weight.copy_(
                    depthwise_weight(self.weights, self.kernel, plan.input.depth, self.filters)
                )
                if conv.bias is not None:
                    conv.bias.zero_()
        if self.frozen:
            conv.requires_grad_(False)
        return conv


def _effective(kernel: Pair, dilation: Pair) -> Pair:
    return (effective_kernel(kernel[0], dilation[0]), effective_kernel(kernel[1], dilation[1]))
