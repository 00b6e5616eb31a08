"""Options that may be `auto`: one way to resolve them.

An option such as `train.channels_last` is `true`, `false` or `auto`, and its config
value is a bool or the string "auto". The string is truthy, so `if setting:` would read
`auto` as a yes; every such option is therefore resolved here, by `resolve`, and code
past it only sees the decided value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

AUTO = "auto"

T = TypeVar("T")


def is_auto(value: object) -> bool:
    return isinstance(value, str) and value == AUTO


def resolve(value: T | str, decide: Callable[[], T]) -> T:
    """`decide()` when `value` is `auto`, else `value` itself (already validated)."""
    if is_auto(value):
        return decide()
    return value  # type: ignore[return-value]
