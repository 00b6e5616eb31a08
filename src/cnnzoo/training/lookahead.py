"""Lookahead (`train.lookahead`; Zhang, Lucas, Hinton and Ba, 2019): slow weights that
the weights are pulled back to every few steps.

The optimizer moves the (fast) weights as usual. After every `steps`-th optimizer step
(global steps k, 2k, ...) the slow weights move `alpha` of the way towards them,
slow += alpha * (fast - slow), and the weights are set to the slow ones. The weights
explore for k steps; the slow weights keep the direction they agreed on.

What it covers: all floating-point state of the network, the weights and batchnorm's
running statistics, as airbench's lookahead does, so that the statistics stay those
of the weights they are used with. Integer state (batchnorm's step counter) is left
alone. With `train.ema` the average is updated after the lookahead, from the weights
the network then holds. The schedule of synchronisations is the global step itself, so
the checkpoint only needs the slow weights for a resume to be exact.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.config.experiment import LookaheadConfig


class Lookahead:
    """The slow weights of `network`, synchronised every `steps` optimizer steps."""

    def __init__(self, network: nn.Module, steps: int, alpha: float) -> None:
        self.steps = steps
        self.alpha = alpha
        # state_dict() tensors share the parameters' storage, and the optimizer updates
        # in place, so the pairs are found once.
        live = {k: v for k, v in network.state_dict().items() if v.is_floating_point()}
        self.names = list(live)
        self._fast = list(live.values())
        self._slow = [t.detach().clone() for t in self._fast]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After global step `step` (1 for the first): every `steps`-th, the slow weights
        move towards the weights and the weights become the slow weights."""
        if step % self.steps:
            return
        torch._foreach_lerp_(self._slow, self._fast, self.alpha)
        torch._foreach_copy_(self._fast, self._slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self._slow, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if sorted(state) != sorted(self.names):
            raise ValueError("the lookahead's slow weights do not match the network")
        for name, slow in zip(self.names, self._slow, strict=True):
            slow.copy_(state[name])


def create_lookahead(network: nn.Module, config: LookaheadConfig) -> Lookahead | None:
    """`train.lookahead`'s slow weights, or None when it is off."""
    if config.steps is None:
        return None
    return Lookahead(network, config.steps, config.alpha)
