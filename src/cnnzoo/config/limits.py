"""Limits on what a config may ask for, checked on the parsed config before anything
is planned or built (no torch): a run's name is one safe folder name, and a network
has at most `MAX_LAYERS` layers once every `repeat` is expanded."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cnnzoo.layers.spec import LayerSpec
from cnnzoo.utils.params import Where

# ResNet-152 has about 500 layers here (conv, batchnorm and relu each count); 10,000
# leaves room for any real network while a summary of that many stays well under a second.
MAX_LAYERS = 10_000
MAX_NAME = 100  # the run folder adds "-YYYYMMDD-HHMMSS"; file systems allow 255 bytes
_NAME_FIX = "use letters, digits, '-', '_' and '.', e.g. name: resnet20-wide"


def check_run_name(name: str, where: Where) -> None:
    """A run's `name` becomes the folder runs/NAME-TIME: it must be one folder name that
    stays inside runs/ (no separator, no '..', not hidden, not absolute)."""
    problem = None
    if not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif name.startswith("."):
        problem = "starts with a dot (a hidden folder, or '..' out of runs/)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains a control character"
    elif len(name.encode()) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} bytes"
    if problem is not None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise where.error(
            f"the name {shown!r} {problem}; it becomes the run's folder name", "name",
            fix=_NAME_FIX,
        )


def count_layers(specs: Sequence[LayerSpec]) -> int:
    """The layers `specs` stand for once desugared and every `repeat` expanded, counted
    by multiplying counts, so that a bomb of nested repeats is never expanded."""
    total = 0
    for spec in specs:
        total += len(spec.desugar())
        nested = sum(count_layers(value) for value in _nested_stacks(spec))
        total += getattr(spec, "times", 1) * nested  # only `repeat` has `times`
    return total


def _nested_stacks(spec: LayerSpec) -> list[tuple[LayerSpec, ...]]:
    return [
        value for value in (getattr(spec, f.name) for f in dataclasses.fields(spec))
        if isinstance(value, tuple) and value and all(isinstance(v, LayerSpec) for v in value)
    ]


def check_layer_count(specs: Sequence[LayerSpec], where: Where) -> None:
    count = count_layers(specs)
    if count > MAX_LAYERS:
        raise where.error(
            f"the network has {count:,} layers once every repeat is expanded; at most "
            f"{MAX_LAYERS:,} are allowed", "layers",
            fix="lower the repeats' times (nested repeats multiply)",
        )
