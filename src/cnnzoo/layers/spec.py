"""What every layer type is made of: its parameters (`LayerSpec`), what it does to one
image (`Inferred`), its place in a planned network (`LayerPlan`), and the context its
`infer` may ask about (`PlanContext`). Pure data, no torch; the registry, the planner
and each layer file import this module, and it imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cnnzoo.layers.shapes import Pair, Volume
from cnnzoo.utils.params import Where, to_dict

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Inferred:
    """What a layer does to one image, computed without torch."""

    output: Volume
    label: str  # short description for the summary, e.g. "conv 3x3/1 same, 12"
    params: int = 0
    macs: int = 0  # multiply-adds of one forward pass, as FlopCounterMode counts them
    window: tuple[Pair, Pair] | None = None  # (effective kernel, stride) for receptive fields
    global_window: bool = False  # sees the whole input (fc, global pooling)
    dense_params: int | None = None  # a fully connected layer with the same in/out volumes
    children: tuple[LayerPlan, ...] = ()  # nested layers (residual, repeat, branches)
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # for `build`


class PlanContext(Protocol):
    """What a layer's `infer` may ask the planner: where its input came from (for
    messages, and the type of the layer that made it), whether the layer is nested in a
    block, the network's input volume, and to plan the nested layers of a block from the
    current position."""

    @property
    def after(self) -> str:
        """Where the current layer's input came from, e.g. 'layers[3] pool'."""
        ...

    @property
    def previous(self) -> str | None:
        """The type of the layer whose output is the current layer's input ('conv');
        None where the input is the image itself."""
        ...

    @property
    def nested(self) -> bool:
        """Whether the current layer is inside a block (residual, repeat)."""
        ...

    @property
    def image(self) -> Volume:
        """The network's input volume (one image)."""
        ...

    def plan_children(self, specs: Sequence[LayerSpec], inp: Volume, where: Where,
                      key: str | None = "layers", *, times: int = 1,
                      start: int = 0) -> tuple[LayerPlan, ...]:
        """Plan a nested stack (at `where.key`, or at `where` itself when `key` is None);
        child indices are numbered from `start`."""
        ...

    def plan_child(self, spec: LayerSpec, inp: Volume, where: Where, number: int) -> LayerPlan:
        """Plan one layer as child `number` of the current one, fed `inp` (a path of
        `branches`: each path sees the branch's input, not the path before it)."""
        ...


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """Base of every layer type's parameters."""

    type_name: ClassVar[str] = ""
    primary: ClassVar[str | None] = None  # the parameter a scalar shorthand sets
    summary_doc: ClassVar[str] = ""
    # The layer that declares the image volume (`input`): the planner reads its `volume`
    # and requires it first. A class attribute, so the planner needs no layer file.
    is_input: ClassVar[bool] = False
    # A group of layers that is no layer of the file (a path of `branches`): the
    # network's description names it by its label.
    is_group: ClassVar[bool] = False

    def check(self, where: Where) -> None:
        """Checks across parameters that need no input shape."""

    def desugar(self) -> list[LayerSpec]:
        """The layers this one stands for; itself unless it has a shorthand."""
        return [self]

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        raise NotImplementedError

    def build(self, plan: LayerPlan, build_child: Callable[[LayerPlan], nn.Module]) -> nn.Module:
        raise NotImplementedError

    @property
    def needs_images(self) -> bool:
        """Whether the weights `build` gives are a placeholder until the trainer calls
        `initialise_from_images` (a conv's init: whitening)."""
        return False

    def initialise_from_images(self, module: nn.Module, images: torch.Tensor) -> None:
        """Set the weights of `module`, which `build` made, from a sample of the
        normalised training images (N, D, H, W), the layer's input."""
        raise NotImplementedError

    def to_yaml(self, *, full: bool = False) -> Any:
        """This layer as a YAML list item: a bare name or a one-key mapping."""
        params = to_dict(self, skip_defaults=not full)
        if not params:
            return self.type_name
        return {self.type_name: params}


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the network, as the summary shows it and the builder builds it."""

    index: str  # "3" at the top level, "3.1" inside layer 3
    spec: LayerSpec
    where: Where  # its place in the experiment file, for messages
    input: Volume
    output: Volume
    label: str
    params: int
    macs: int
    receptive_field: Pair  # (height, width) in input pixels
    jump: Pair  # input pixels between neighbouring outputs
    dense_params: int | None
    children: tuple[LayerPlan, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return self.spec.type_name

    def walk(self) -> Iterator[LayerPlan]:
        yield self
        for child in self.children:
            yield from child.walk()
