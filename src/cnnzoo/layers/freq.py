"""`freq_filter`: a fixed low-, high- or band-pass filter applied in the frequency domain.

Per channel, on the layer's own input size and circularly (as the DFT is): with
`fy, fx` the frequencies of `numpy.fft.fftfreq` for H and W in cycles per pixel
(Nyquist 0.5) and `r = sqrt(fx^2 + fy^2)`, the low-pass mask is `r <= cutoff`
(ideal), `exp(-r^2 / (2 cutoff^2))` (gaussian) or `1 / (1 + (r / cutoff)^(2 order))`
(butterworth); high-pass is `1 - low-pass`; band-pass is `lowpass(high) *
highpass(low)`. The output is the real part of the inverse DFT of the masked DFT.

The mask depends on |f| only, so it is real and even (M[-k] = M[k]): the masked
spectrum of a real image stays Hermitian and its inverse is real. That lets the layer
run as four real matrix products with cosine and sine matrices (`matmul`, exact, and
exportable to ONNX without complex tensors) or through real FFTs (`fft`, for large
inputs, where the matrices would cost H*W*(H+W) multiply-adds per channel).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnzoo.layers.registry import register_layer
from cnnzoo.layers.shapes import Pair, Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Kind, Where, choice_kind, int_kind, optional, param

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

KINDS = ("lowpass", "highpass", "bandpass")
SHAPES = ("ideal", "gaussian", "butterworth")
FREQ_IMPLS = ("auto", "matmul", "fft")
MAX_CUTOFF = 0.5 * math.sqrt(2)  # the corner (0.5, 0.5) of the frequency plane
DEFAULT_ORDER = 2
# `auto` multiplies by DFT matrices up to this side: their cost grows as H*W*(H+W)
# against the FFT's H*W*log(H*W), and at 128 x 128 they hold 2 x 4 x 128^2 floats.
MATMUL_MAX_SIDE = 128


def radius(size: Pair, rows: slice = slice(None)) -> np.ndarray:
    """|f| in cycles per pixel at every bin of an (H, W) DFT (or the `rows` of it), in
    numpy's fftfreq order."""
    import numpy as np  # here, not at the top: planning and the summary never need it

    fy = np.fft.fftfreq(size[0])[rows, None]
    fx = np.fft.fftfreq(size[1])[None, :]
    return np.sqrt(fx**2 + fy**2)


def lowpass_mask(size: Pair, cutoff: float, shape: str, order: int = DEFAULT_ORDER,
                 rows: slice = slice(None)) -> np.ndarray:
    """The (H, W) low-pass transfer function (or its `rows`), float64, in fftfreq order."""
    r = radius(size, rows)
    if shape == "ideal":
        return (r <= cutoff).astype("float64")
    if shape == "gaussian":
        import numpy as np

        return np.exp(-(r**2) / (2 * cutoff**2))
    if shape == "butterworth":
        return 1.0 / (1.0 + (r / cutoff) ** (2 * order))
    raise ValueError(f"unknown filter shape {shape!r}; known: {', '.join(SHAPES)}")


def frequency_mask(size: Pair, kind: str, shape: str, cutoff: float | None = None,
                   low: float | None = None, high: float | None = None,
                   order: int = DEFAULT_ORDER, rows: slice = slice(None)) -> np.ndarray:
    """The (H, W) transfer function of a filter (or its `rows`), float64, in numpy's
    fftfreq order."""
    if kind == "lowpass" and cutoff is not None:
        return lowpass_mask(size, cutoff, shape, order, rows)
    if kind == "highpass" and cutoff is not None:
        return 1.0 - lowpass_mask(size, cutoff, shape, order, rows)
    if kind == "bandpass" and low is not None and high is not None:
        passed = lowpass_mask(size, high, shape, order, rows)
        return passed * (1.0 - lowpass_mask(size, low, shape, order, rows))
    raise ValueError(f"{kind} needs {'low and high' if kind == 'bandpass' else 'cutoff'}")


def _cutoff_kind() -> Kind:
    def parse(value: Any, key: str, where: Where) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(f"{key} must be a number. Received: {key}={value!r}", key)
        if not 0 < value <= MAX_CUTOFF:
            raise where.error(
                f"{key} must be in (0, 0.5*sqrt(2) = {MAX_CUTOFF:.4f}] cycles per pixel "
                f"(Nyquist is 0.5). Received: {key}={value!r}", key,
                fix="e.g. 0.1 keeps coarse shapes, 0.25 half the band",
            )
        return float(value)

    def schema() -> dict[str, Any]:
        return {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CUTOFF}

    return Kind(f"number in (0, {MAX_CUTOFF:.4f}]", parse, schema)


CUTOFF = optional(_cutoff_kind())


@register_layer(
    "freq_filter", primary="cutoff",
    doc="fixed low/high/band-pass filter in the frequency domain, per channel",
)
@dataclass(frozen=True, kw_only=True)
class FreqFilterSpec(LayerSpec):
    kind: str = param("lowpass", kind=choice_kind(KINDS), doc="lowpass, highpass or bandpass")
    cutoff: float | None = param(
        None, kind=CUTOFF, doc="lowpass/highpass: the cutoff radius in cycles per pixel"
    )
    low: float | None = param(None, kind=CUTOFF, doc="bandpass: the lower cutoff")
    high: float | None = param(None, kind=CUTOFF, doc="bandpass: the upper cutoff")
    shape: str = param("gaussian", kind=choice_kind(SHAPES), doc="the mask's profile")
    order: int | None = param(
        None, kind=optional(int_kind(1)), doc=f"butterworth only: the order (default "
        f"{DEFAULT_ORDER}); higher is sharper",
    )
    impl: str = param(
        "auto", kind=choice_kind(FREQ_IMPLS),
        doc=f"matmul (real DFT matrices, exportable), fft, or auto (matmul up to "
        f"{MATMUL_MAX_SIDE} pixels a side); same results",
    )

    def check(self, where: Where) -> None:
        if self.kind == "bandpass":
            for key in ("low", "high"):
                if getattr(self, key) is None:
                    raise where.error(f"kind: bandpass needs '{key}'", key,
                                      fix="e.g. {kind: bandpass, low: 0.05, high: 0.25}")
            if self.cutoff is not None:
                raise where.error("kind: bandpass takes low and high, not cutoff", "cutoff",
                                  fix="replace cutoff by low and high")
            if self.low is not None and self.high is not None and self.low >= self.high:
                raise where.error(
                    f"bandpass needs low < high. Received: low={self.low}, high={self.high}",
                    "low", fix="swap them or lower low",
                )
        else:
            if self.cutoff is None:
                raise where.error(f"kind: {self.kind} needs 'cutoff'", "cutoff",
                                  fix="e.g. cutoff: 0.25 (cycles per pixel; Nyquist is 0.5)")
            for key in ("low", "high"):
                if getattr(self, key) is not None:
                    raise where.error(f"'{key}' belongs to kind: bandpass, not {self.kind}",
                                      key, fix=f"remove {key} or set kind: bandpass")
        if self.order is not None and self.shape != "butterworth":
            raise where.error(f"order applies to shape: butterworth, not {self.shape}",
                              "order", fix="remove order or set shape: butterworth")

    def mask(self, size: Pair, rows: slice = slice(None)) -> np.ndarray:
        """The transfer function on an (H, W) input (or its `rows`), float64."""
        return frequency_mask(size, self.kind, self.shape, self.cutoff, self.low, self.high,
                              self.order or DEFAULT_ORDER, rows)

    def mask_float32(self, size: Pair) -> np.ndarray:
        """The whole mask in float32, computed a band of rows at a time: on a photograph
        of 81 M pixels the float64 temporaries of one pass would be several GB."""
        import numpy as np

        out = np.empty(size, dtype=np.float32)
        step = max(1, 2**20 // size[1])
        for top in range(0, size[0], step):
            out[top : top + step] = self.mask(size, slice(top, top + step))
        return out

    def label(self) -> str:
        bands = f"{self.low:g}-{self.high:g}" if self.kind == "bandpass" else f"{self.cutoff:g}"
        order = f" n{self.order}" if self.order is not None else ""
        return f"freq_filter {self.kind} {self.shape}{order} {bands}"

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        if inp.flat:
            raise where.error(
                f"freq_filter needs a volume but its input is a flat vector of {inp.depth} "
                f"values (after {context.after})",
                fix="move the freq_filter before the fc/flatten layers",
            )
        impl = choose_freq_impl(inp.size) if self.impl == "auto" else self.impl
        impl_text = f" {impl}" if self.impl == impl else f" auto: {impl}"
        return Inferred(
            output=inp,
            label=self.label() + impl_text,
            macs=inp.depth * freq_filter_macs(inp.size, impl),
            global_window=True,  # every output sees the whole (circular) input
            detail={"impl": impl},
        )

    def build(self, plan: LayerPlan, build_child: Callable) -> nn.Module:
        from cnnzoo.layers.modules import FreqFilter

        return FreqFilter(self.mask_float32(plan.input.size), plan.detail["impl"])


def choose_freq_impl(size: Pair) -> str:
    return "matmul" if max(size) <= MATMUL_MAX_SIDE else "fft"


def freq_filter_macs(size: Pair, impl: str) -> int:
    """Multiply-adds of one channel.

    matmul: exactly the four matrix products `FreqFilter` runs (what torch's
    FlopCounterMode counts): the forward DFT along W (H x W by W x 2W) and along H
    (2H x H by H x 2W), the inverse along H (2H x 2H by 2H x W) and along W (H x 2W
    by 2W x W): 4 H W^2 + 8 H^2 W. The mask's product is elementwise, not counted,
    as activations are not.
    fft: the textbook radix-2 count, an estimate: a real FFT of N = H W points costs
    about N log2 N real multiply-adds, so the forward and inverse transforms 2 N log2 N,
    plus N for the mask.
    """
    height, width = size
    if impl == "matmul":
        return 4 * height * width * width + 8 * height * height * width
    points = height * width
    return round(2 * points * math.log2(max(points, 2))) + points
