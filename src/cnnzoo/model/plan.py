"""The layer plan: every layer's input and output volume, parameters, mult-adds and
receptive field, computed from the config alone (no torch).

The plan is what the summary prints and what the builder turns into modules, so
a shape error is found here, with the layer's place in the file, before torch
ever sees it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cnnzoo.config.datasets import dataset_info, dataset_volume
from cnnzoo.errors import ConfigError
from cnnzoo.layers.registry import get_layer_type
from cnnzoo.layers.shapes import Pair, Volume, receptive_field
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec
from cnnzoo.utils.params import Where

if TYPE_CHECKING:
    from cnnzoo.config.experiment import ExperimentConfig


@dataclass(frozen=True)
class Plan:
    """The whole network."""

    name: str
    input: Volume
    layers: tuple[LayerPlan, ...]

    @property
    def output(self) -> Volume:
        return self.layers[-1].output

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_dense_params(self) -> int:
        return sum(p.dense_params or 0 for layer in self.layers for p in _leaves(layer))

    @property
    def activation_values(self) -> int:
        """Values of every layer's output for one image: what a forward pass keeps."""
        return sum(p.output.numel for layer in self.layers for p in _leaves(layer))

    def walk(self) -> Iterator[LayerPlan]:
        for layer in self.layers:
            yield from layer.walk()


def _leaves(layer: LayerPlan) -> Iterator[LayerPlan]:
    if layer.children:
        for child in layer.children:
            yield from _leaves(child)
    else:
        yield layer


@dataclass
class _Cursor:
    volume: Volume
    receptive_field: Pair
    jump: Pair
    after: str  # "layers[3] pool", for messages about where a volume came from
    previous: str | None = None  # the type of the layer that made the volume; None: the image


class Planner:
    """Walks a stack of layer specs from an input volume, inferring every shape."""

    def __init__(self, image: Volume) -> None:
        self.image = image  # the network's input, for layers that reproduce it

    def plan_stack(
        self,
        specs: Sequence[LayerSpec],
        inp: Volume,
        where: Where,
        *,
        prefix: str = "",
        rf: Pair = (1, 1),
        jump: Pair = (1, 1),
        after: str = "the input",
        previous: str | None = None,
        times: int = 1,
    ) -> tuple[LayerPlan, ...]:
        """Plan `specs` (a YAML layers list at `where`) applied to `inp`, `times` over."""
        cursor = _Cursor(inp, rf, jump, after, previous)
        plans: list[LayerPlan] = []
        for yaml_index, spec in [item for _ in range(times) for item in enumerate(specs)]:
            # The same key path the parser used, so errors find the parameter's line.
            at = Where(
                f"{where.label}[{yaml_index}] ({spec.type_name})",
                (*where.path, yaml_index, spec.type_name),
            )
            for part in spec.desugar():
                index = f"{prefix}{len(plans)}"
                plan = self.plan_layer(part, at, index, cursor)
                plans.append(plan)
                cursor = _Cursor(
                    plan.output,
                    plan.receptive_field,
                    plan.jump,
                    f"{at.label.split('.')[-1].split(' (')[0]} {part.type_name}",
                    part.type_name,
                )
        return tuple(plans)

    def plan_layer(self, spec: LayerSpec, at: Where, index: str, cursor: _Cursor) -> LayerPlan:
        info: Inferred = spec.infer(cursor.volume, at, _LayerContext(self, cursor, index))
        if info.output.width < 1 or info.output.height < 1 or info.output.depth < 1:
            raise at.error(
                f"the output volume would be {info.output} (input {cursor.volume}, "
                f"after {cursor.after}); the volume has shrunk to nothing",
                fix="use padding, a smaller kernel or stride, or fewer pooling layers",
            )
        rf, jump = _receptive_field(info, cursor)
        return LayerPlan(
            index=index,
            spec=spec,
            where=at,
            input=cursor.volume,
            output=info.output,
            label=info.label,
            params=info.params,
            macs=info.macs,
            receptive_field=rf,
            jump=jump,
            dense_params=info.dense_params,
            children=info.children,
            detail=dict(info.detail),
        )


def _receptive_field(info: Inferred, cursor: _Cursor) -> tuple[Pair, Pair]:
    """The receptive field and jump after a layer, from the one before it."""
    if info.children:
        # The widest branch (a residual's body, not its 1x1 shortcut) decides.
        widest = max(info.children, key=lambda p: p.receptive_field[0] * p.receptive_field[1])
        return widest.receptive_field, widest.jump
    if info.global_window:
        extent = (cursor.volume.height, cursor.volume.width)
        rf, _ = receptive_field(cursor.receptive_field, cursor.jump, extent, (1, 1))
        return rf, cursor.jump
    if info.window is not None:
        return receptive_field(cursor.receptive_field, cursor.jump, *info.window)
    return cursor.receptive_field, cursor.jump


@dataclass(frozen=True)
class _LayerContext:
    """The `PlanContext` of one layer: the planner at that layer's position."""

    planner: Planner
    cursor: _Cursor
    index: str

    @property
    def after(self) -> str:
        return self.cursor.after

    @property
    def previous(self) -> str | None:
        return self.cursor.previous

    @property
    def nested(self) -> bool:
        return "." in self.index

    @property
    def image(self) -> Volume:
        return self.planner.image

    def plan_children(
        self,
        specs: Sequence[LayerSpec],
        inp: Volume,
        where: Where,
        key: str | None = "layers",
        *,
        times: int = 1,
        start: int = 0,
    ) -> tuple[LayerPlan, ...]:
        """Plan a nested stack (residual body, repeat, a path) from the current position;
        child indices are numbered from `start` under the current layer's index."""
        plans = self.planner.plan_stack(
            specs,
            inp,
            where if key is None else Where(f"{where.label}.{key}", (*where.path, key)),
            prefix=f"{self.index}.",
            rf=self.cursor.receptive_field,
            jump=self.cursor.jump,
            after=self.cursor.after,
            previous=self.cursor.previous,
            times=times,
        )
        return tuple(_reindex(p, start + i, f"{self.index}.") for i, p in enumerate(plans))

    def plan_child(self, spec: LayerSpec, inp: Volume, where: Where, number: int) -> LayerPlan:
        """Plan `spec` as child `number` of the current layer, fed `inp` from the
        current position (each path of a `branches` starts where the branch does)."""
        cursor = replace(self.cursor, volume=inp)
        return self.planner.plan_layer(spec, where, f"{self.index}.{number}", cursor)


def plan_layers(
    layers: Sequence[LayerSpec],
    input_volume: Volume | None = None,
    *,
    name: str = "model",
) -> Plan:
    """Plan a model's layers. The input volume comes from a leading `input` layer, or
    from `input_volume` (the dataset's shape) when there is none."""
    where = Where("model.layers", ("model", "layers"))
    specs = list(layers)
    for i, spec in enumerate(specs[1:], start=1):
        if spec.is_input:
            raise ConfigError(
                "input must be the first layer",
                where=f"model.layers[{i}] (input)",
                path=("model", "layers", i),
                fix="move it to the top or remove it",
            )
    if specs and specs[0].is_input:
        declared = specs[0].volume
        if input_volume is not None and input_volume != declared:
            raise ConfigError(
                f"input is {declared} but the dataset gives {input_volume}",
                where="model.layers[0] (input)",
                path=("model", "layers", 0),
                fix=_input_fix(declared, input_volume),
            )
        input_volume = declared
    if input_volume is None:
        raise ConfigError(
            "the input volume is unknown",
            where="model.layers[0]",
            path=("model", "layers", 0),
            fix="start the layers with '- input: {width: W, height: H, depth: D}' "
            "or set data.dataset",
        )
    planner = Planner(input_volume)
    planned = planner.plan_stack(specs, input_volume, where)
    if not (specs and specs[0].is_input):
        # Layer 0 is always the input, written or implied, so summary rows and
        # module indices agree either way.
        input_plan = planner.plan_stack([_input_spec(input_volume)], input_volume, where)[0]
        planned = (input_plan, *(_reindex(p, i + 1) for i, p in enumerate(planned)))
    return Plan(name=name, input=input_volume, layers=planned)


def _input_spec(volume: Volume) -> LayerSpec:
    """The `input` layer that declares `volume`."""
    return get_layer_type("input")(width=volume.width, height=volume.height, depth=volume.depth)


def last_weighted_layer(plan: Plan) -> LayerPlan:
    """The layer that decides the number of outputs: the last one with weights
    (an activation or dropout after it changes nothing)."""
    for layer in reversed(plan.layers):
        if layer.params or layer.children:
            return layer
    return plan.layers[-1]


def _input_fix(declared: Volume, data: Volume) -> str:
    """How to make the data fit the declared input (or the input fit the data)."""
    ways = []
    if declared.size != data.size:
        grow = (declared.height - data.height, declared.width - data.width)
        if grow[0] == grow[1] and grow[0] > 0 and grow[0] % 2 == 0:
            ways.append(f"data.pad: {grow[0] // 2}")
        ways.append(f"data.resize: [{declared.height}, {declared.width}]")
    fix = "set " + " or ".join(ways) if ways else ""
    if declared.depth != data.depth:
        fix += (" and " if fix else "set ") + f"data.channels: {declared.depth}"
    return (
        f"{fix}, or change the input to {{width: {data.width}, height: {data.height}, "
        f"depth: {data.depth}}}"
    )


def _reindex(plan: LayerPlan, index: int, prefix: str = "") -> LayerPlan:
    new = f"{prefix}{index}"
    if new == plan.index:
        return plan
    children = tuple(_reindex(c, j, f"{new}.") for j, c in enumerate(plan.children))
    return replace(plan, index=new, children=children)


def plan_experiment(config: ExperimentConfig) -> Plan:
    """Plan a whole experiment: the dataset's shape feeds the input; a classifier's
    last layer must produce one unit per class. Errors name the file and line."""
    try:
        return _plan_experiment(config)
    except ConfigError as exc:
        if config.origin is not None:
            raise config.origin.locate(exc) from None
        raise


def _plan_experiment(config: ExperimentConfig) -> Plan:
    data = config.data
    if data.dataset is None:
        return plan_layers(config.model.layers, name=config.name)
    info = dataset_info(data.dataset)
    data_volume = dataset_volume(data.dataset, data.resize, data.pad, data.channels)
    declared = config.model.layers[0].is_input
    if info.layout in ("fake", "folder") and declared and data.resize is None:
        data_volume = None  # these take their shape from the input layer
    plan = plan_layers(config.model.layers, data_volume, name=config.name)
    last = plan.layers[-1]
    out = last.output
    if not out.flat and (out.width, out.height) != (1, 1):
        raise ConfigError(
            f"the network ends in a volume {out}, but a classifier must end in one value "
            "per class",
            where=last.where.label,
            path=last.where.path,
            fix="end with '- fc: N' or a conv to N filters and global_pool",
        )
    classes = info.num_classes
    if classes is not None and out.depth != classes:
        last = last_weighted_layer(plan)
        raise ConfigError(
            f"the last layer gives {out.depth} outputs but {data.dataset} has {classes} classes",
            where=last.where.label,
            path=last.where.path,
            fix=(f"add '- length' after it: each of its {classes} capsules' length is a class "
                 "score") if out.capsule_dim and out.capsules == classes
            else f"make the last layer produce {classes} units (e.g. '- fc: {classes}')",
        )
    return plan
