"""A time budget for training that re-plans as it goes, and the one step timer.

The same config trains as long as a fast CPU allows and stops in time on a slow one
or on one that slows down. The clock is the training loop's: the steps, each epoch's
validation and checkpoint (not the start-up, not the final test). The first steps
are left out of the measurement (they create oneDNN's kernels); after the next
`TIMED_STEPS`, at every epoch end and every `1/CHECKS` of the planned steps (more
often towards the end), the
time spent plus the steps left at the recent speed (and the epoch ends left at the
last one's cost) is set against the budget. A forecast more than `TOLERANCE` past it
re-fits the number of steps to what fits; one more than `TOLERANCE` short of it
stretches the run again while a quarter of it is left, never past the configured
epochs.

The schedule follows through a `Timeline`: a re-plan maps the steps left onto what
was left of the schedule, so it keeps its shape, compressed or stretched, and goes
on from the learning rate it had. Every re-plan (step, new total) is kept in the
checkpoint; a resumed run replays them and re-plans only from its own timing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SKIPPED_STEPS = 5  # not timed: the first steps build kernels and fault in memory
TIMED_STEPS = 20  # the fewest steps a speed is measured over
TOLERANCE = 0.02  # a forecast this far past the budget (or short of it) re-plans
CHECKS = 20  # besides every epoch end, the plan is checked every 1/CHECKS of its steps


def steps_within(budget_s: float, elapsed_s: float, done: int, seconds_per_step: float,
                 max_steps: int) -> int:
    """How many steps (or epochs) in all fit in `budget_s`, `done` of them taking
    `elapsed_s`, at most `max_steps`: the one "how many fit a budget" computation."""
    left = max(0.0, budget_s - elapsed_s)
    more = math.floor(left / seconds_per_step) if seconds_per_step > 0 else max_steps
    return max(done, min(max_steps, done + more))


def time_steps(step: Callable[[], Any], steps: int, *, warmup: int = 0,
               sync: Callable[[], Any] | None = None) -> float:
    """Seconds per call of `step` over `steps` calls, after `warmup` untimed ones
    (kernel selection, allocation); `sync` waits for a device that queues work."""
    for _ in range(warmup):
        step()
    if sync is not None:
        sync()
    tick = time.perf_counter()
    for _ in range(steps):
        step()
    if sync is not None:
        sync()
    return (time.perf_counter() - tick) / max(1, steps)


@dataclass(frozen=True)
class Replan:
    """The plan changed after `step` steps: the run takes `total` steps in all."""

    step: int
    total: int


class Timeline:
    """Where each step falls on the schedule drawn for `length` steps.

    Without re-plans step t is at t. A re-plan after s steps maps the steps it leaves,
    s-1 .. total-1, linearly onto what was left of the schedule, u(s-1) .. length-1:
    the step before it keeps its place (no jump in the learning rate) and the last
    step lands on the schedule's end.
    """

    def __init__(self, length: int, replans: Sequence[Replan] = ()) -> None:
        self.length = length
        self.segments: list[tuple[int, float, int]] = []  # (anchor, its place, last step)
        for replan in replans:
            self.add(replan)

    def add(self, replan: Replan) -> None:
        anchor = replan.step - 1
        self.segments.append((anchor, self(anchor), replan.total - 1))

    def __call__(self, step: int) -> float:
        end = self.length - 1
        for anchor, place, last in reversed(self.segments):
            if step >= anchor:
                if last <= anchor:  # no steps left: past the anchor is the schedule's end
                    return place if step == anchor else float(end)
                return min(end, place + (step - anchor) * (end - place) / (last - anchor))
        return float(min(step, end))


class StepBudget:
    """The number of training steps: the configured epochs' worth (`max_steps`), or
    what fits `seconds` of training at the speed measured as the run goes."""

    def __init__(self, seconds: float | None, max_steps: int, steps_per_epoch: int,
                 replan: bool = True, solo: bool = True) -> None:
        self.seconds = seconds
        # One process: a check may fall on any step (several must agree on the steps).
        self.solo = solo
        self.max_steps = max_steps
        self.steps_per_epoch = steps_per_epoch
        self.replan = replan  # False: the first plan only, kept however the speed changes
        self.total = max_steps
        self.replans: list[Replan] = []
        self.timeline = Timeline(max_steps)
        self.checked = False  # whether the first check (the plan) has been made
        self.first_plan: int | None = None  # the steps the first check chose (this process)
        # This process's own timing, in seconds without the epoch ends:
        self.first: int | None = None  # the step this process started after
        self.marks: list[tuple[int, float]] = []  # (step, seconds) where speeds are measured from
        self.last = (0, 0.0)  # the last step's (step, elapsed)
        self.ends_seconds = 0.0  # all epoch ends so far (validation, checkpoint)
        self.end_seconds = 0.0  # the last epoch end's
        self.reason = ""  # why the last proposal differs from the plan

    def restore(self, replans: Sequence[Sequence[int]], planned: int | None = None) -> None:
        """The re-plans a checkpoint recorded, replayed; `planned`: a checkpoint from
        before re-plans were recorded, which kept only its total."""
        self.replans = [Replan(int(s), int(t)) for s, t in replans]
        self.timeline = Timeline(self.max_steps, self.replans)
        if self.replans:
            self.total, self.checked = self.replans[-1].total, True
        elif planned is not None:
            self.total, self.checked = planned, True

    def recorded(self) -> list[list[int]]:
        """The re-plans as the checkpoint keeps them."""
        return [[r.step, r.total] for r in self.replans]

    def after_step(self, step: int, elapsed: float) -> bool:
        """`step` steps are done after `elapsed` seconds of the loop; True when the plan
        is due for a check (at the same steps in every process)."""
        if self.seconds is None or (self.checked and not self.replan):
            return False
        if self.first is None:
            self.first = step - 1
        self.last = (step, elapsed)
        if step - self.first == SKIPPED_STEPS:
            self.marks.append((step, elapsed - self.ends_seconds))
        if (self.solo and self.replan and step < self.total
                and elapsed > self.seconds * (1 + TOLERANCE)):
            return True  # past the budget, even before the first plan: stop here
        if not self.marks or step - self.marks[0][0] < TIMED_STEPS:
            return False
        if step % self.steps_per_epoch == 0 or step >= self.total:
            return False  # an epoch ends here: its check follows, with the validation's time
        # Every 1/CHECKS of the plan, and more often towards its end, where a slowdown
        # has the fewest steps left to be made up in.
        interval = max(1, min(math.ceil(self.total / CHECKS), (self.total - step) // 4))
        return not self.checked or step - self.marks[-1][0] >= interval

    def after_epoch(self, step: int, elapsed: float) -> bool:
        """The epoch that ended at `step` finished its validation and checkpoint at
        `elapsed`; True when the plan is due for a check."""
        if self.seconds is None or (self.checked and not self.replan):
            return False
        if self.last[0] == step and self.first is not None:
            self.end_seconds = max(0.0, elapsed - self.last[1])
            self.ends_seconds += self.end_seconds
        self.last = (step, elapsed)
        return bool(self.marks) and step - self.marks[0][0] >= TIMED_STEPS

    def seconds_per_step(self, step: int) -> float:
        """The recent speed: since the latest mark at least TIMED_STEPS steps back (or,
        stopping before there is one, since this process began)."""
        now = self.last[1] - self.ends_seconds
        start, then = next((m for m in reversed(self.marks) if step - m[0] >= TIMED_STEPS),
                           (self.first or 0, 0.0))
        return (now - then) / max(1, step - start)

    def forecast(self, step: int, elapsed: float, per_step: float, total: int) -> float:
        """Seconds of the loop when `total` steps are done, at `per_step` a step."""
        ends = math.ceil(total / self.steps_per_epoch) - step // self.steps_per_epoch
        return elapsed + (total - step) * per_step + max(0, ends) * self.end_seconds

    def propose(self, step: int, elapsed: float) -> int:
        """The total this process would plan now: the plan as it stands while its
        forecast is within TOLERANCE of the budget, else the steps that fit."""
        assert self.seconds is not None, "propose() after a due check"
        per_step = self.seconds_per_step(step)
        self.marks.append((step, self.last[1] - self.ends_seconds))
        expected = self.forecast(step, elapsed, per_step, self.total)
        fits = self.total
        # A run that turns out faster is stretched while a quarter of it is left: near
        # the end a stretch would gain a step or two and redraw the schedule for them.
        stretch = self.total < self.max_steps and (self.total - step) * 4 >= self.total
        if self.total > step and (expected > self.seconds * (1 + TOLERANCE)
                                  or (expected < self.seconds * (1 - TOLERANCE) and stretch)):
            for _ in range(2):  # the epoch ends left depend on the total itself
                reserve = self.forecast(step, 0.0, 0.0, fits)
                fits = steps_within(self.seconds - reserve, elapsed, step, per_step,
                                    self.max_steps)
        self.reason = (f"{elapsed:.1f}s of {self.seconds:g}s spent after step {step}, the "
                       f"last steps at {per_step * 1000:.1f} ms each: {self.total - step} more "
                       f"would end at {expected:.1f}s")
        return fits

    def adopt(self, step: int, total: int) -> str | None:
        """Take `total` (agreed between processes) as the plan after `step` steps: the
        line that says so, where it changed the plan or was the first plan."""
        first = not self.checked
        self.checked = True
        if first:
            self.first_plan = total
        epochs = total / self.steps_per_epoch
        if total == self.total:
            if first:
                return (f"time budget {self.seconds:g}s: all {total} steps ({epochs:.2f} "
                        f"epochs) fit at the measured speed")
            return None
        old = self.total
        replan = Replan(step, total)
        self.replans.append(replan)
        self.timeline.add(replan)
        self.total = total
        if first and total <= step:
            return (f"time budget {self.seconds:g}s: spent by the first {step} steps "
                    f"({self.reason}); training stops there")
        if first:
            return (f"time budget {self.seconds:g}s: {total} of {self.max_steps} steps "
                    f"({epochs:.2f} epochs) fit at the measured speed; the schedule is "
                    "fitted to them")
        return (f"time budget {self.seconds:g}s: re-planned {old} -> {total} steps "
                f"({epochs:.2f} epochs): {self.reason}; the rest of the schedule is drawn "
                "over the steps left")

    def status(self, elapsed: float) -> str:
        """The epoch line's part: the loop's time against the budget."""
        return "" if self.seconds is None else f"  budget {elapsed:.1f}s/{self.seconds:g}s"

    def record(self, steps: int, elapsed: float) -> dict[str, Any] | None:
        """results.json's account of the budget: the first plan, the re-plans, the steps
        taken and the loop's seconds against the budget."""
        if self.seconds is None:
            return None
        return {"seconds": self.seconds,
                # A first plan that kept every step is not in the re-plans' list.
                "planned_steps": self.first_plan if self.first_plan is not None else (
                    self.replans[0].total if self.replans else self.max_steps),
                "steps": steps, "replans": [{"step": r.step, "steps": r.total}
                                            for r in self.replans],
                "loop_seconds": round(elapsed, 3),
                "over": round(elapsed / self.seconds - 1, 4)}
