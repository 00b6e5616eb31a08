"""Stopping a run whose loss blew up but stayed finite.

A NaN loss stops training at once. A learning rate far too high can instead drive the
loss to 1e15 and keep it finite, and the run would go on to the end at chance accuracy.
The rule: a run diverged when its training loss (the mean over the global batch) stays
above `factor` x ln(classes) for `steps` consecutive steps. ln(classes) is the loss of a
uniform guess, about where a freshly initialised classifier starts, so a run that is
learning never spends long at ten times it; a single bad batch does not stop a run,
only a streak does. The streak restarts with a resumed run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from cnnzoo.config.experiment import DivergenceConfig


class _Tally(Protocol):
    epoch: int
    hint: str

    def add_loss(self, value: float, info: tuple[int, int, int, float]) -> None: ...


class DivergenceGuard:
    """Counts the consecutive steps whose loss is above the limit."""

    def __init__(self, config: DivergenceConfig, num_classes: int) -> None:
        self.config = config
        self.num_classes = num_classes
        # One class: every guess is right and the loss of a uniform guess is 0.
        on = config.enabled and num_classes > 1
        self.limit = config.factor * math.log(num_classes) if on else math.inf
        self.streak = 0

    def diverged(self, loss: float) -> bool:
        """Whether `loss`, the latest step's, ends a streak long enough to stop."""
        self.streak = self.streak + 1 if loss > self.limit else 0
        return self.streak >= self.config.steps

    def explain(self, loss: float) -> str:
        return (f"the loss stayed above {self.limit:.3g} ({self.config.factor:g} x "
                f"ln {self.num_classes}, the loss of a uniform guess) for {self.streak} steps "
                f"and reached {loss:.3g}")

    def watch(self, tally: _Tally,
              error: Callable[[str], Exception]) -> Callable[[float, Any], None]:
        """`tally.add_loss`, then the check; a diverged run raises `error(message)`, worded
        like the NaN stop: where, the learning rate, the hint, and how to turn this off."""

        def add_loss(value: float, info: tuple[int, int, int, float]) -> None:
            tally.add_loss(value, info)
            if self.diverged(value):
                step, batch, _, lr = info
                raise error(
                    f"{self.explain(value)} at epoch {tally.epoch + 1}, step {batch} (global "
                    f"step {step}) with lr {lr:.3g}; {tally.hint}. To train on anyway: --set "
                    f"train.divergence.enabled=false"
                )

        return add_loss
