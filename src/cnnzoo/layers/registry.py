"""The layer registry: one table from a layer's name in YAML to its spec class.

A layer type is a frozen dataclass of its parameters (declared with `param`), with
three methods: `infer` (shapes and costs from the input volume, pure), `build`
(the `nn.Module`) and optionally `desugar` (e.g. `activation: relu` becomes its
own layer). `@register_layer("name")` adds it; adding a layer type touches one file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cnnzoo.errors import ConfigError, did_you_mean
from cnnzoo.layers.spec import LayerSpec
from cnnzoo.utils.params import REQUIRED, Kind, Where, param_infos, params_schema, parse_params

S = TypeVar("S", bound=type[LayerSpec])

_REGISTRY: dict[str, type[LayerSpec]] = {}


def register_layer(
    name: str, *, primary: str | None = None, doc: str = ""
) -> Callable[[S], S]:
    """Class decorator: make `cls` the layer type `name` of the model language."""

    def decorate(cls: S) -> S:
        if name in _REGISTRY:
            raise ValueError(f"layer type '{name}' is already registered by {_REGISTRY[name]}")
        if primary is not None and primary not in {i.name for i in param_infos(cls)}:
            raise ValueError(f"primary '{primary}' is not a parameter of {cls.__name__}")
        cls.type_name = name
        cls.primary = primary
        cls.summary_doc = doc or (cls.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_layer_type(name: str) -> type[LayerSpec]:
    """The spec class registered as `name`; KeyError names the known ones."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown layer type '{name}'{did_you_mean(name, _REGISTRY)}")
    return _REGISTRY[name]


def list_layer_types() -> list[str]:
    return list(_REGISTRY)


def parse_layers(value: Any, where: Where) -> tuple[LayerSpec, ...]:
    """A YAML list of layers to specs; `where` is the list's place (e.g. `model.layers`)."""
    if not isinstance(value, list):
        raise where.error(
            f"layers must be a list (one '- layer' per line), got {type(value).__name__}"
        )
    if not value:
        raise where.error("layers is empty", fix="list at least one layer")
    return tuple(parse_layer(item, i, where) for i, item in enumerate(value))


def parse_layer(item: Any, index: int, parent: Where) -> LayerSpec:
    """One item of a layers list: `relu`, `{conv: {...}}` or `{conv: 12}`."""
    at = Where(f"{parent.label}[{index}]", (*parent.path, index))
    known = ", ".join(_REGISTRY)
    if isinstance(item, str):
        name, params = item, None
    elif isinstance(item, Mapping):
        if not item:
            raise at.error(
                "a layer is one key (its type), got an empty mapping {}",
                fix="write e.g. '- relu' or '- conv: {filters: 16}'",
            )
        if len(item) != 1:
            keys = list(item)
            first = keys[0]
            if first in _REGISTRY and item[first] is None:
                raise at.error(
                    f"'{keys[1]}' is written as a second key of this layer",
                    fix=f"indent the parameters under '{first}:' by two more spaces",
                )
            raise at.error(
                f"a layer is one key (its type), got {len(keys)} keys: {', '.join(map(str, keys))}",
                fix="start each layer with '- ' on its own line",
            )
        ((name, params),) = item.items()
    else:
        raise at.error(
            f"a layer is a name or a one-key mapping, got {type(item).__name__} {item!r}",
            fix="write e.g. '- relu' or '- conv: {filters: 16}'",
        )
    if name not in _REGISTRY:
        raise at.error(
            f"unknown layer type '{name}'{did_you_mean(name, _REGISTRY)}",
            fix=f"known types: {known}",
        )
    cls = _REGISTRY[name]
    at = Where(f"{at.label} ({name})", (*at.path, name) if isinstance(item, Mapping) else at.path)
    if params is not None and not isinstance(params, Mapping):
        if cls.primary is None:
            raise at.error(
                f"{name} takes no shorthand value; write its parameters as a mapping. "
                f"Received: {params!r}"
            )
        params = {cls.primary: params}
    spec = parse_params(cls, params, at)
    return spec


def _layers_kind() -> Kind:
    def parse(value: Any, key: str, where: Where) -> tuple[LayerSpec, ...]:
        return parse_layers(value, Where(f"{where.label}.{key}", (*where.path, key)))

    def dump(value: tuple[LayerSpec, ...]) -> list[Any]:
        return [spec.to_yaml() for spec in value]

    return Kind("list of layers", parse, lambda: {"$ref": "#/definitions/layers"}, dump)


LAYERS = _layers_kind()


def layer_table() -> list[dict[str, Any]]:
    """Every registered layer type with its parameters, for `cnnzoo layers`."""
    rows = []
    for name, cls in _REGISTRY.items():
        params = [
            {
                "name": info.name,
                "kind": info.kind.name,
                "default": "required" if info.default is REQUIRED else info.kind.dump(info.default),
                "doc": info.doc,
                "primary": info.name == cls.primary,
            }
            for info in param_infos(cls)
        ]
        rows.append({"type": name, "doc": cls.summary_doc, "params": params})
    return rows


def layer_schema() -> dict[str, Any]:
    """JSON Schema of one item of a layers list."""
    bare = [name for name, cls in _REGISTRY.items() if all(
        i.default is not REQUIRED for i in param_infos(cls))]
    options: list[dict[str, Any]] = [{"enum": bare, "description": "a layer without parameters"}]
    for name, cls in _REGISTRY.items():
        params = params_schema(cls)
        value: dict[str, Any] = {"oneOf": [params]}
        if cls.primary is not None:
            primary = next(i for i in param_infos(cls) if i.name == cls.primary)
            value["oneOf"].append(primary.kind.schema())
        if name in bare:
            value["oneOf"].append({"type": "null"})
        options.append(
            {
                "type": "object",
                "properties": {name: value},
                "required": [name],
                "additionalProperties": False,
                "description": cls.summary_doc,
            }
        )
    return {"oneOf": options}


def check_not_none(value: Any, message: str) -> None:
    """Internal invariant check that survives `python -O`."""
    if value is None:
        raise ConfigError(message)
