"""Every layer type of the model language; importing this package registers them.

The layer files hold specs and shape arithmetic only (no torch), so that planning
and the summary never import torch; the torch modules they build are in `modules`.
"""

from typing import Any

from cnnzoo.layers import (
    attention,
    basic,
    blocks,
    branches,
    capsules,
    conv,
    decoder,
    dense,
    freq,
    local,
    pool,
)

_MODULES = ("Conv2d", "Linear", "LocallyConnected2d", "Residual")


def __getattr__(name: str) -> Any:
    # The torch modules, importable from here as before, loaded on first use.
    if name in _MODULES:
        from cnnzoo.layers import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'cnnzoo.layers' has no attribute {name!r}")


__all__ = [
    "Conv2d",
    "Linear",
    "LocallyConnected2d",
    "Residual",
    "attention",
    "basic",
    "blocks",
    "branches",
    "capsules",
    "conv",
    "decoder",
    "dense",
    "freq",
    "local",
    "pool",
]
