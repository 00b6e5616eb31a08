"""Weight initialisation as a layer option (`init:` on conv, local and fc).

`default` keeps PyTorch's own (uniform, with a sixth of the variance He et al.
derive for ReLU: fine with batchnorm, but a deep plain ReLU stack without it
starts with a signal that shrinks layer by layer). The others are the usual schemes, with the fans
counted as Keras counts them (a window's taps times its channels), so that they
also hold for a locally-connected layer's weight layout; biases start at zero.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


INITS = ("default", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform")

INIT_DOC = ("weight initialisation: default (PyTorch's), he_normal, he_uniform (for ReLU "
            "stacks; He et al. 2015), xavier_normal, xavier_uniform (Glorot and Bengio 2010)")


def initialise(weight: torch.Tensor, bias: torch.Tensor | None, init: str, fan_in: int,
               fan_out: int) -> None:
    """Draw `weight` by scheme `init` for the given fans and zero `bias`."""
    import torch

    if init == "default":
        return
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; one of {', '.join(INITS)}")
    with torch.no_grad():
        if init == "he_normal":
            weight.normal_(0.0, math.sqrt(2.0 / fan_in))
        elif init == "he_uniform":
            bound = math.sqrt(6.0 / fan_in)
            weight.uniform_(-bound, bound)
        elif init == "xavier_normal":
            weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        else:
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weight.uniform_(-bound, bound)
        if bias is not None:
            bias.zero_()
