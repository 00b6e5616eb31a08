"""Typed parameters for config dataclasses: parsing, defaults, docs and JSON Schema.

Every section of an experiment file and every layer type is a frozen dataclass
whose fields are declared with `param(...)`. One generic parser validates a YAML
mapping against such a class (unknown keys, missing keys, types, ranges, choices),
and the same declarations generate `cnnzoo layers` and `cnnzoo schema`, so the
documentation cannot drift from what is accepted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cnnzoo.errors import ConfigError, did_you_mean


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Where:
    """A place in the experiment file: a label for messages and the key path for lines."""

    label: str  # e.g. "model.layers[3] (pool)" or "train.optimizer"
    path: tuple[str | int, ...]

    def error(self, what: str, key: str | None = None, fix: str | None = None) -> ConfigError:
        path = (*self.path, key) if key is not None else self.path
        return ConfigError(what, where=self.label, path=path, fix=fix)


@dataclass(frozen=True)
class Kind:
    """How one parameter's value is read, shown and described in JSON Schema."""

    name: str  # shown by `cnnzoo layers`, e.g. "int or [h, w]"
    parse: Callable[[Any, str, Where], Any]  # (value, key, where) -> normalised value
    schema: Callable[[], dict[str, Any]]
    dump: Callable[[Any], Any] = lambda value: value  # normalised value -> YAML value


def _received(key: str, value: Any) -> str:
    return f"Received: {key}={value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_kind(minimum: int | None = None, maximum: int | None = None) -> Kind:
    def parse(value: Any, key: str, where: Where) -> int:
        if not _is_int(value):
            raise where.error(f"{key} must be an integer. {_received(key, value)}", key)
        _check_range(value, key, where, minimum, maximum)
        return value

    def schema() -> dict[str, Any]:
        return _range_schema({"type": "integer"}, minimum, maximum)

    return Kind("int" + _range_text(minimum, maximum), parse, schema)


def float_kind(
    minimum: float | None = None, maximum: float | None = None, below: float | None = None
) -> Kind:
    def parse(value: Any, key: str, where: Where) -> float:
        # YAML reads `5e-4` (no dot) as a string; accept it, since users write it.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise where.error(f"{key} must be a number. {_received(key, value)}", key) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(f"{key} must be a number. {_received(key, value)}", key)
        value = float(value)
        if not math.isfinite(value):
            raise where.error(f"{key} must be a finite number. {_received(key, value)}", key)
        _check_range(value, key, where, minimum, maximum)
        if below is not None and value >= below:
            raise where.error(f"{key} must be below {below}. {_received(key, value)}", key)
        return value

    def schema() -> dict[str, Any]:
        out = _range_schema({"type": "number"}, minimum, maximum)
        if below is not None:
            out["exclusiveMaximum"] = below
        return out

    text = _range_text(minimum, maximum) if below is None else f" in [{minimum}, {below})"
    return Kind("number" + text, parse, schema)


def bool_kind() -> Kind:
    def parse(value: Any, key: str, where: Where) -> bool:
        if not isinstance(value, bool):
            raise where.error(f"{key} must be true or false. {_received(key, value)}", key)
        return value

    return Kind("bool", parse, lambda: {"type": "boolean"})


def str_kind() -> Kind:
    def parse(value: Any, key: str, where: Where) -> str:
        if not isinstance(value, str) or not value:
            raise where.error(f"{key} must be a non-empty string. {_received(key, value)}", key)
        return value

    return Kind("string", parse, lambda: {"type": "string", "minLength": 1})


def choice_kind(choices: Sequence[str]) -> Kind:
    choices = tuple(choices)

    def parse(value: Any, key: str, where: Where) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise where.error(
                f"{key} must be one of {', '.join(choices)}. {_received(key, value)}{hint}", key
            )
        return value

    return Kind(" | ".join(choices), parse, lambda: {"enum": list(choices)})


def pair_kind(minimum: int = 1) -> Kind:
    """An int or a [height, width] pair, normalised to a (height, width) tuple."""

    def parse(value: Any, key: str, where: Where) -> tuple[int, int]:
        if _is_int(value):
            pair = (value, value)
        elif (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(_is_int(v) for v in value)
        ):
            pair = (value[0], value[1])
        else:
            raise where.error(
                f"{key} must be an integer or a [height, width] pair. {_received(key, value)}", key
            )
        for v in pair:
            if v < minimum:
                qualifier = "positive" if minimum == 1 else f">= {minimum}"
                raise where.error(f"{key} must be {qualifier}. {_received(key, value)}", key)
        return pair

    def schema() -> dict[str, Any]:
        item = {"type": "integer", "minimum": minimum}
        return {"oneOf": [item, {"type": "array", "items": item, "minItems": 2, "maxItems": 2}]}

    return Kind("int or [h, w]", parse, schema, dump_pair)


def dump_pair(pair: Any) -> Any:
    if isinstance(pair, tuple):
        return pair[0] if pair[0] == pair[1] else list(pair)
    return pair


def optional(kind: Kind) -> Kind:
    """`kind` or null (None)."""

    def parse(value: Any, key: str, where: Where) -> Any:
        return None if value is None else kind.parse(value, key, where)

    def schema() -> dict[str, Any]:
        return {"oneOf": [kind.schema(), {"type": "null"}]}

    def dump(value: Any) -> Any:
        return None if value is None else kind.dump(value)

    return Kind(f"{kind.name} or null", parse, schema, dump)


def one_of(*kinds: Kind) -> Kind:
    """The first kind that accepts the value; the error of the last one otherwise."""

    def parse(value: Any, key: str, where: Where) -> Any:
        names = " or ".join(k.name for k in kinds)
        for kind in kinds:
            try:
                return kind.parse(value, key, where)
            except ConfigError:
                continue
        raise where.error(f"{key} must be {names}. {_received(key, value)}", key)

    def schema() -> dict[str, Any]:
        return {"oneOf": [k.schema() for k in kinds]}

    def dump(value: Any) -> Any:
        return dump_pair(value)

    return Kind(" or ".join(k.name for k in kinds), parse, schema, dump)


def with_fix(kind: Kind, fix: str) -> Kind:
    """`kind` whose errors also say `fix` (unless they say one of their own)."""

    def parse(value: Any, key: str, where: Where) -> Any:
        try:
            return kind.parse(value, key, where)
        except ConfigError as exc:
            exc.fix = exc.fix or fix
            raise

    return dataclasses.replace(kind, parse=parse)


def _check_range(value: float, key: str, where: Where, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        word = "positive" if lo == 1 and isinstance(lo, int) else f">= {lo}"
        raise where.error(f"{key} must be {word}. {_received(key, value)}", key)
    if hi is not None and value > hi:
        raise where.error(f"{key} must be <= {hi}. {_received(key, value)}", key)


def _range_schema(out: dict[str, Any], lo: float | None, hi: float | None) -> dict[str, Any]:
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    return out


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def param(default: Any = REQUIRED, *, kind: Kind, doc: str) -> Any:
    """Declare a dataclass field as a config parameter."""
    meta = {"kind": kind, "doc": doc}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples or None for defaults")
    # Defaults are stored normalised, exactly as `kind.parse` would return them, so
    # a spec built in Python equals the same spec read from YAML.
    return dataclasses.field(default=default, metadata=meta)


def float_list_kind() -> Kind:
    """A list of numbers (one per channel)."""

    def parse(value: Any, key: str, where: Where) -> tuple[float, ...]:
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise where.error(f"{key} must be a list of numbers. {_received(key, value)}", key)
        return tuple(float(v) for v in value)

    return Kind(
        "list of numbers",
        parse,
        lambda: {"type": "array", "items": {"type": "number"}, "minItems": 1},
        lambda value: list(value),
    )


def section(cls: type, doc: str) -> Any:
    """A nested section (a mapping parsed as `cls`), defaulting to all of its defaults.

    A section with a `name` parameter also takes the name alone: `optimizer: adam`.
    """
    named = any(info.name == "name" for info in param_infos(cls))

    def parse(value: Any, key: str, where: Where) -> Any:
        if named and isinstance(value, str):
            value = {"name": value}
        label = f"{where.label}.{key}" if where.label else key
        return parse_params(cls, value, Where(label, (*where.path, key)))

    def schema() -> dict[str, Any]:
        mapping = params_schema(cls)
        if not named:
            return mapping
        name_schema = mapping["properties"]["name"]
        return {"oneOf": [mapping, {k: v for k, v in name_schema.items() if k != "default"}]}

    kind = Kind("mapping", parse, schema, to_dict)
    return dataclasses.field(default_factory=cls, metadata={"kind": kind, "doc": doc})


@dataclass(frozen=True)
class ParamInfo:
    name: str
    kind: Kind
    default: Any  # REQUIRED when there is none
    doc: str


def param_infos(cls: type) -> list[ParamInfo]:
    infos = []
    for f in dataclasses.fields(cls):
        if "kind" not in f.metadata:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        infos.append(ParamInfo(f.name, f.metadata["kind"], default, f.metadata["doc"]))
    return infos


T = TypeVar("T")


def parse_params(cls: type[T], value: Any, where: Where) -> T:
    """Validate a mapping against `cls`'s parameters and build the frozen instance."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise where.error(
            f"expected a mapping of parameters, got {type(value).__name__} {value!r}"
        )
    infos = {info.name: info for info in param_infos(cls)}
    for key in value:
        if key not in infos:
            if " (" in where.label:
                name = where.label.split(" (")[-1].rstrip(")")
            else:
                name = where.label or "the experiment file"
            raise where.error(
                f"'{key}' is not a parameter of {name}{did_you_mean(key, infos)}",
                key,
                fix=f"known: {', '.join(infos)}",
            )
    kwargs = {}
    for name, info in infos.items():
        if name in value:
            kwargs[name] = info.kind.parse(value[name], name, where)
        elif info.default is REQUIRED:
            raise where.error(f"'{name}' is required ({info.doc})", fix=f"add {name}: ...")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def to_dict(obj: Any, *, skip_defaults: bool = False) -> dict[str, Any]:
    """A config dataclass as plain YAML-ready data (the inverse of `parse_params`)."""
    out = {}
    for info in param_infos(type(obj)):
        value = getattr(obj, info.name)
        if skip_defaults and info.default is not REQUIRED and value == info.default:
            continue
        out[info.name] = info.kind.dump(value)
    return out


def params_schema(cls: type) -> dict[str, Any]:
    """JSON Schema of a mapping of `cls`'s parameters."""
    props = {}
    required = []
    for info in param_infos(cls):
        prop = dict(info.kind.schema())
        prop["description"] = info.doc
        if info.default is not REQUIRED and not dataclasses.is_dataclass(info.default):
            dumped = info.kind.dump(info.default)
            if isinstance(dumped, (int, float, str, bool, list)) or dumped is None:
                prop["default"] = dumped
        else:
            if info.default is REQUIRED:
                required.append(info.name)
        props[info.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema
