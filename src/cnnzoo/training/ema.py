"""An exponential moving average of the weights (`train.ema`), as timm's ModelEma and
Keras' `use_ema` keep one.

After every optimizer step each floating-point tensor of the network's state (weights
and batchnorm's running statistics) moves the average a little towards itself,
average = d * average + (1 - d) * weights; integer state (batchnorm's step counter)
is copied. Validation, the test and the saved weights use the average, which is a
smoother point of the last few hundred steps than the weights themselves.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The average of `network`'s state over the steps, held in a copy of `network`."""

    def __init__(self, network: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(network)
        self.module.requires_grad_(False)
        # The same tensors every step (the optimizer updates in place), so the pairs are
        # found once; state_dict() gives tensors that share the parameters' storage.
        live = network.state_dict()
        average = self.module.state_dict()
        self._floats = [(average[k], live[k]) for k in live if live[k].is_floating_point()]
        self._others = [(average[k], live[k]) for k in live if not live[k].is_floating_point()]

    def decay_at(self, step: int) -> float:
        """The decay used by the update after global step `step` (1 for the first)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the network's current state, after step `step`."""
        weight = 1.0 - self.decay_at(step)
        if self._floats:
            averages = [a for a, _ in self._floats]
            torch._foreach_lerp_(averages, [w for _, w in self._floats], weight)
        for average, value in self._others:
            average.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
