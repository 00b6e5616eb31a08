"""Weight initialisation as a layer option (`init:` on conv, local and fc).

`default` keeps PyTorch's own (uniform, with a sixth of the variance He et al.
derive for ReLU: fine with batchnorm, but a deep plain ReLU stack without it
starts with a signal that shrinks layer by layer). The others are the usual schemes, with the fans
counted as Keras counts them (a window's taps times its channels), so that they
also hold for a locally-connected layer's weight layout; biases start at zero.

A conv has two more: `dirac`, which starts it as the identity map (its first filters
pass their input channels through), and `whitening`, whose filters the trainer sets
from the training images (cnnzoo.layers.whitening); until then it holds the default.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


INITS = ("default", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform")
# A conv's own: dirac needs a window with a centre tap, whitening the images it sees.
CONV_INITS = (*INITS, "dirac", "whitening")

INIT_DOC = ("weight initialisation: default (PyTorch's), he_normal, he_uniform (for ReLU "
            "stacks; He et al. 2015), xavier_normal, xavier_uniform (Glorot and Bengio 2010)")
CONV_INIT_DOC = (INIT_DOC + "; dirac (the identity map: the first filters pass their input "
                 "channels through) or whitening (filters from the training images' patch "
                 "covariance, set when training starts; frozen unless trainable: true)")


def initialise(weight: torch.Tensor, bias: torch.Tensor | None, init: str, fan_in: int,
               fan_out: int, groups: int = 1) -> None:
    """Draw `weight` by scheme `init` for the given fans and zero `bias`."""
    import torch

    if init in ("default", "whitening"):
        return
    if init not in CONV_INITS:
        raise ValueError(f"unknown init {init!r}; one of {', '.join(CONV_INITS)}")
    with torch.no_grad():
        if init == "dirac":
            pass_through(weight, groups)
        elif init == "he_normal":
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


def pass_through(weight: torch.Tensor, groups: int = 1) -> None:
    """Make the first filters of each group of a conv weight (F, D/groups, kh, kw) copy
    the group's input channels (filter i: channel i, by its centre tap), as
    `torch.nn.init.dirac_` does; the other filters keep what they hold, as airbench
    leaves them, so that a wider conv starts as the identity plus learned features."""
    import torch

    filters, per_group, kh, kw = weight.shape
    assert filters // groups >= per_group and kh % 2 == 1 and kw % 2 == 1, weight.shape
    grouped = weight.view(groups, filters // groups, per_group, kh, kw)
    channel = torch.arange(per_group)
    with torch.no_grad():
        grouped[:, :per_group].zero_()
        grouped[:, channel, channel, kh // 2, kw // 2] = 1.0
