"""A time budget for training: the speed of the first steps fixes how many steps fit.

The same config then trains as long as a fast CPU allows and stops in time on a
slow one. The first steps are left out of the measurement (they create oneDNN's
kernels); the next ones are timed, and the run is cut to the whole number of steps
that fits in what is left of the budget, never more than the configured epochs.
The learning-rate schedule is then fitted to that number, and the number is kept
in the checkpoint, so that a resumed run follows the same plan.
"""

from __future__ import annotations

import math

SKIPPED_STEPS = 5  # not timed: the first steps build kernels and fault in memory
TIMED_STEPS = 20


def steps_within(budget_s: float, elapsed_s: float, done: int, seconds_per_step: float,
                 max_steps: int) -> int:
    """How many steps in all fit in `budget_s`, `done` of them taking `elapsed_s`."""
    left = max(0.0, budget_s - elapsed_s)
    more = math.floor(left / seconds_per_step) if seconds_per_step > 0 else max_steps
    return max(done, min(max_steps, done + more))


class StepBudget:
    """The planned number of training steps: the configured epochs' worth until the
    timing fixes it (or always, without a budget)."""

    def __init__(self, seconds: float | None, max_steps: int) -> None:
        self.seconds = seconds
        self.max_steps = max_steps
        self.total = max_steps
        self.decided = seconds is None
        self.mark: tuple[int, float] | None = None  # (step, seconds) where timing began

    def restore(self, planned: int | None) -> None:
        """The plan a checkpoint recorded (None: not yet fixed when it was written)."""
        if planned is not None:
            self.total, self.decided = planned, True

    def after_step(self, step: int, elapsed_s: float) -> bool:
        """`step` steps are done after `elapsed_s` seconds of training; True when this
        call fixed the plan."""
        if self.decided or self.seconds is None:
            return False
        if self.mark is None:
            if step >= SKIPPED_STEPS:
                self.mark = (step, elapsed_s)
            return False
        if step - self.mark[0] < TIMED_STEPS:
            return False
        per_step = (elapsed_s - self.mark[1]) / (step - self.mark[0])
        self.total = steps_within(self.seconds, elapsed_s, step, per_step, self.max_steps)
        self.decided = True
        return True

    def describe(self, steps_per_epoch: int) -> str:
        epochs = self.total / steps_per_epoch
        if self.total == self.max_steps:
            return (f"time budget {self.seconds:g}s: all {self.total} steps "
                    f"({epochs:.2f} epochs) fit")
        return (f"time budget {self.seconds:g}s: {self.total} of {self.max_steps} steps "
                f"({epochs:.2f} epochs) fit at the measured speed; the schedule is fitted "
                "to them")
