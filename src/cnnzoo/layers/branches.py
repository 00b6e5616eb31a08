"""Parallel paths joined into one volume: `branches` (Inception modules, dense blocks,
fire modules). Each path is a nested stack fed the branch's input; `concat` stacks
their outputs along the depth, `add` sums them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnzoo.layers.registry import parse_layer, register_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import Inferred, LayerPlan, LayerSpec, PlanContext
from cnnzoo.utils.params import Kind, Where, choice_kind, param

if TYPE_CHECKING:
    from torch import nn

Path = tuple[LayerSpec, ...]


def path_where(where: Where, number: int) -> Where:
    """The place of path `number` of the branch at `where`: `...paths[1]`."""
    return Where(f"{where.label}.paths[{number}]", (*where.path, "paths", number))


def _paths_kind() -> Kind:
    def parse(value: Any, key: str, where: Where) -> tuple[Path, ...]:
        if not isinstance(value, list) or not value:
            got = "an empty list" if value == [] else f"{type(value).__name__} {value!r}"
            raise where.error(
                f"paths must be a non-empty list of paths (each a list of layers), got {got}",
                key,
                fix="write e.g. paths: [[conv: {filters: 16, kernel: 1}], []] "
                "([] is the identity)",
            )
        paths = []
        for number, path in enumerate(value):
            at = path_where(where, number)
            if not isinstance(path, list):
                raise at.error(
                    f"a path is a list of layers, got {type(path).__name__} {path!r}",
                    fix="write the path in brackets, e.g. - [conv: {filters: 16, kernel: 1}], "
                    "or [] for the identity",
                )
            paths.append(tuple(parse_layer(item, i, at) for i, item in enumerate(path)))
        return tuple(paths)

    def dump(value: tuple[Path, ...]) -> list[Any]:
        return [[spec.to_yaml() for spec in path] for path in value]

    def schema() -> dict[str, Any]:
        path = {"type": "array", "items": {"$ref": "#/definitions/layer"}}
        return {"type": "array", "minItems": 1, "items": path}

    return Kind("list of paths (lists of layers)", parse, schema, dump)


@dataclass(frozen=True, kw_only=True)
class PathSpec(LayerSpec):
    """One path of a `branches`: a stack that is no layer of the file on its own."""

    type_name = "path"  # in the summary's JSON; no layer of the file has this name
    is_group = True
    layers: Path
    number: int  # its place among the branch's paths

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        children = context.plan_children(self.layers, inp, where, key=None)
        return Inferred(
            output=children[-1].output if children else inp,
            label=f"path {self.number}" + ("" if children else " (identity)"),
            params=sum(p.params for p in children),
            macs=sum(p.macs for p in children),
            children=children,
        )

    def build(self, plan: LayerPlan, build_child: Callable[[LayerPlan], nn.Module]) -> nn.Module:
        from torch import nn

        # An empty Sequential returns its input: the identity path.
        return nn.Sequential(*(build_child(p) for p in plan.children))

    def to_yaml(self, *, full: bool = False) -> Any:
        return [spec.to_yaml(full=full) for spec in self.layers]


@register_layer("branches", primary="paths",
                doc="parallel paths on the same input, joined by concat (depths add) or add")
@dataclass(frozen=True, kw_only=True)
class BranchesSpec(LayerSpec):
    paths: tuple[Path, ...] = param(
        kind=_paths_kind(), doc="the parallel paths, each a nested stack; [] is the identity"
    )
    merge: str = param(
        "concat", kind=choice_kind(["concat", "add"]),
        doc="concat: stack the outputs along the depth (W x H must match); "
        "add: sum them (the volumes must match)",
    )

    def check(self, where: Where) -> None:
        for j, path in enumerate(self.paths):
            for k, spec in enumerate(path):
                if spec.is_input:
                    at = path_where(where, j)
                    raise Where(f"{at.label}[{k}] (input)", (*at.path, k, "input")).error(
                        "input must be the first layer of the model, not a layer of a path",
                        fix="remove it: every path starts from the branch's input",
                    )

    def infer(self, inp: Volume, where: Where, context: PlanContext) -> Inferred:
        paths = tuple(
            context.plan_child(PathSpec(layers=path, number=j), inp, path_where(where, j), j)
            for j, path in enumerate(self.paths)
        )
        out = self._joined(paths, where)
        return Inferred(
            output=out,
            label=f"branches {self.merge} x{len(paths)}",
            params=sum(p.params for p in paths),
            macs=sum(p.macs for p in paths),
            dense_params=inp.numel * out.numel + out.numel,
            children=paths,
        )

    def _joined(self, paths: tuple[LayerPlan, ...], where: Where) -> Volume:
        """The merged volume; the first path that does not fit the first one is an error."""
        first = paths[0].output
        for j, path in enumerate(paths[1:], start=1):
            out = path.output
            if self.merge == "add" and out != first:
                raise path_where(where, j).error(
                    f"merge: add needs every path to give the same volume, but path 0 gives "
                    f"{first} and path {j} gives {out}",
                    fix="make the paths end in the same W x H x D (e.g. a 1x1 conv to "
                    f"{first.depth} filters at the end of path {j}), or use merge: concat",
                )
            if self.merge == "concat" and (
                out.flat != first.flat or (out.width, out.height) != (first.width, first.height)
            ):
                raise path_where(where, j).error(
                    f"merge: concat needs every path to keep the same W x H, but path 0 gives "
                    f"{first} and path {j} gives {out}",
                    fix="give each path the same strides ('padding: same' keeps W x H at "
                    "stride 1)",
                )
        if self.merge == "add":
            return first
        depth = sum(p.output.depth for p in paths)
        return Volume.vector(depth) if first.flat else Volume(first.width, first.height, depth)

    def build(self, plan: LayerPlan, build_child: Callable[[LayerPlan], nn.Module]) -> nn.Module:
        from cnnzoo.layers.modules import Branches

        return Branches([build_child(p) for p in plan.children], self.merge)
