"""`--set key=value` overrides: a dotted key path (with [i] list indices, [-1] from the
end) into the raw YAML data of an experiment, applied before validation, so that an
override is checked exactly like the file."""

from __future__ import annotations

import re
from typing import Any

from cnnzoo.config.yamlio import load_yaml
from cnnzoo.errors import ConfigError

_INDEX = re.compile(r"\[(-?\d+)\]")


def parse_override_key(key: str) -> tuple[str | int, ...]:
    """`model.layers[1].conv.filters` or `model.layers.1.conv.filters` as a key path;
    a negative index counts from the end (`model.layers[-1]` is the last layer)."""
    parts: list[str | int] = []
    for part in _INDEX.sub(r".\1", key).split("."):
        if not part:
            raise ConfigError(f"bad key '{key}' in --set", fix="write e.g. train.epochs=3")
        digits = part.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):  # '²'.isdigit(), but int('²') fails
            parts.append(part)
        elif len(digits) > 9:  # longer than any list can be, and int() refuses 4,300 digits
            raise ConfigError(
                f"bad key in --set: the index {part[:12]}... ({len(part):,} digits) is too "
                "large", fix="write e.g. model.layers.1.conv.filters=8",
            )
        else:
            parts.append(int(part))
    return tuple(parts)


def apply_override(data: dict[str, Any], text: str) -> tuple[str | int, ...]:
    """Set one `key=value` (value in YAML syntax) into the raw experiment data."""
    if "=" not in text:
        raise ConfigError(
            f"--set takes key=value, got '{text}'", fix="write e.g. --set train.epochs=3"
        )
    key, _, raw = text.partition("=")
    key_path = parse_override_key(key.strip())
    value = load_yaml(raw, f"--set {text}").data if raw.strip() else None
    node: Any = data
    for i, part in enumerate(key_path[:-1]):
        part = _from_end(node, part)
        key_path = (*key_path[:i], part, *key_path[i + 1:])
        here = ".".join(map(str, key_path[: i + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or not 0 <= part < len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    f"--set {text}: {here} does not exist (the list has {size} items)"
                )
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {here} is not a mapping")
        child = node[part] if isinstance(part, int) else node.get(part)
        if isinstance(key_path[i + 1], str):
            child = _expand_shorthand(part, child)
        node[part] = _copy(child) if child is not None else {}
        node = node[part]
    last = _from_end(node, key_path[-1])
    key_path = (*key_path[:-1], last)
    if isinstance(last, int):
        if not isinstance(node, list) or not 0 <= last < len(node):
            raise ConfigError(f"--set {text}: index {last} does not exist")
    elif not isinstance(node, dict):
        raise ConfigError(f"--set {text}: the parent of '{last}' is not a mapping")
    node[last] = value
    return key_path


def _from_end(node: Any, part: str | int) -> str | int:
    """A negative list index as the index it stands for (left as it is when out of range,
    for the caller's 'does not exist' message)."""
    if isinstance(part, int) and part < 0 and isinstance(node, list) and -len(node) <= part:
        return len(node) + part
    return part


_NAMED_SECTIONS = {"optimizer", "scheduler", "loss"}


def _expand_shorthand(key: str | int, value: Any) -> Any:
    """The mapping a shorthand stands for, so a `--set` can reach into it:
    `optimizer: adam` is {name: adam}, `relu` is {relu: None}, `conv: 8` is {filters: 8},
    `branches: [[...], [...]]` is {paths: [...]}."""
    if isinstance(value, str) and key in _NAMED_SECTIONS:
        return {"name": value}
    if isinstance(value, str) and isinstance(key, int):
        return {value: None}
    if value is not None and not isinstance(value, dict) and isinstance(key, str):
        from cnnzoo.layers.registry import get_layer_type, list_layer_types

        if key in list_layer_types() and get_layer_type(key).primary is not None:
            return {get_layer_type(key).primary: value}
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
