"""The re-planning time budget on a simulated clock: how many steps a run takes when
the machine slows down or speeds up, and the learning rate it gets at every step."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch

from cnnzoo.config.experiment import OptimizerConfig, SchedulerConfig, TrainConfig
from cnnzoo.training.budget import (
    SKIPPED_STEPS,
    TIMED_STEPS,
    TOLERANCE,
    Replan,
    StepBudget,
    Timeline,
    time_steps,
)
from cnnzoo.training.optim import create_scheduler, lr_factor

STEPS_PER_EPOCH = 100
EPOCHS = 20
PEAK = 0.2


def simulate(budget_s: float, seconds_of: Callable[[int], float], *, epoch_end_s: float = 0.0,
             replan: bool = True, scheduler: SchedulerConfig | None = None
             ) -> tuple[StepBudget, float, list[float]]:
    """A run as the trainer drives its budget: after every step the clock, then maybe a
    check, then the schedule's next value; at every epoch end `epoch_end_s` more (the
    validation). Returns the budget, the loop's seconds and the lr of every step."""
    train = TrainConfig(epochs=EPOCHS, optimizer=OptimizerConfig(lr=PEAK),
                        scheduler=scheduler or SchedulerConfig(name="onecycle"))
    budget = StepBudget(budget_s, STEPS_PER_EPOCH * EPOCHS, STEPS_PER_EPOCH, replan)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    schedule = create_scheduler(optimizer, train, STEPS_PER_EPOCH, lambda s: budget.timeline(s))
    now, step, lrs = 0.0, 0, []
    while step < budget.total:
        lrs.append(optimizer.param_groups[0]["lr"])
        now += seconds_of(step)
        step += 1
        if budget.after_step(step, now):
            budget.adopt(step, budget.propose(step, now))
        optimizer.step()
        schedule.step()
        if step % STEPS_PER_EPOCH == 0 or step == budget.total:
            now += epoch_end_s
            if budget.after_epoch(step, now):
                budget.adopt(step, budget.propose(step, now))
    return budget, now, lrs


def expected_place(t: int, replans: list[Replan], length: int) -> float:
    """The schedule's place of step t, written out: each re-plan after s steps draws the
    rest linearly from where step s-1 was to the schedule's last step on the new last."""
    pieces: list[tuple[int, float, int]] = []
    for r in replans:
        anchor = r.step - 1
        pieces.append((anchor, expected_place(anchor, replans[:len(pieces)], length), r.total - 1))
    place = float(t)
    for anchor, start, last in pieces:
        if t >= anchor:
            place = start + (t - anchor) * (length - 1 - start) / (last - anchor)
    return min(place, length - 1)


def halving(step: int) -> float:
    return 0.1 if step < 600 else 0.2


def doubling(step: int) -> float:
    return 0.2 if step < 300 else 0.1


@pytest.mark.parametrize(("seconds_of", "ideal"), [
    (halving, 600 + (150 - 60) / 0.2),  # 60 s for the first 600 steps, 90 s at 0.2
    (doubling, 300 + (150 - 60) / 0.1),  # 60 s for the first 300 steps, 90 s at 0.1
    (lambda step: 0.1, 1500),
])
@pytest.mark.parametrize("epoch_end_s", [0.0, 0.5])
def test_the_run_ends_within_the_budget_at_any_speed(seconds_of, ideal, epoch_end_s) -> None:
    budget, seconds, _ = simulate(150.0, seconds_of, epoch_end_s=epoch_end_s)
    slowest = max(seconds_of(s) for s in range(2000))
    assert seconds <= 150.0 * (1 + TOLERANCE) + slowest + epoch_end_s
    # no time left unused either: within 2% of the budget, or of the ideal step count
    ideal -= epoch_end_s * math.ceil(ideal / STEPS_PER_EPOCH) / slowest
    assert seconds >= 150.0 * (1 - TOLERANCE) - slowest - epoch_end_s
    assert abs(budget.total - ideal) <= ideal * 0.03
    assert budget.replans[0].step == SKIPPED_STEPS + TIMED_STEPS


def test_without_re_planning_the_first_plan_stays() -> None:
    budget, seconds, _ = simulate(150.0, halving, replan=False)
    assert budget.replans == [Replan(SKIPPED_STEPS + TIMED_STEPS, 1499)]
    assert seconds > 230  # what the re-planning saves: 90 s of 1,499 steps at half speed


def test_a_fast_machine_stops_at_the_configured_epochs() -> None:
    budget, _, _ = simulate(150.0, lambda step: 0.01)
    assert budget.total == STEPS_PER_EPOCH * EPOCHS and budget.replans == []
    # slow at first, then fast: stretched back, but to the configured epochs at most
    budget, _, _ = simulate(60.0, lambda step: 0.2 if step < 100 else 0.01)
    assert budget.replans[0].total < 400 and budget.total == STEPS_PER_EPOCH * EPOCHS


def test_a_run_is_stretched_only_while_a_quarter_is_left() -> None:
    """Twice as fast for the last 99 of 1,499 planned steps: 5 s of the budget go unused
    rather than a stretch of a few steps at the end."""
    budget, seconds, _ = simulate(150.0, lambda step: 0.1 if step < 1400 else 0.05)
    assert budget.replans == [Replan(SKIPPED_STEPS + TIMED_STEPS, 1499)]
    assert seconds == pytest.approx(140.0 + 99 * 0.05)


def test_a_budget_spent_before_the_first_plan_stops_at_once() -> None:
    """2 s at 0.1 s a step: past 2% over after 21 steps, before the plan (25 steps)."""
    budget, seconds, _ = simulate(2.0, lambda step: 0.1)
    assert budget.total == 21 and seconds == pytest.approx(2.1)
    assert budget.replans == [Replan(21, 21)]
    # the first plan alone (as before re-planning) only acts after its 25 steps
    budget, _, _ = simulate(2.0, lambda step: 0.1, replan=False)
    assert budget.total == SKIPPED_STEPS + TIMED_STEPS
    assert "spent by the first 25 steps" in (StepBudget(2.0, 100, 10).adopt(25, 25) or "")
    # several processes check at the same steps only: the plan's
    several = StepBudget(2.0, 100, 10, solo=False)
    assert not any(several.after_step(step, step * 0.1) for step in range(1, 25))


@pytest.mark.parametrize("scheduler", [
    SchedulerConfig(name="onecycle"), SchedulerConfig(name="cosine", warmup_epochs=2.0),
    SchedulerConfig(name="cosine", min_lr=0.01),
])
@pytest.mark.parametrize("seconds_of", [halving, doubling])
def test_the_schedule_is_redrawn_over_the_steps_left(scheduler, seconds_of) -> None:
    budget, _, lrs = simulate(150.0, seconds_of, scheduler=scheduler)
    assert len(budget.replans) >= 2 and len(lrs) == budget.total
    length = STEPS_PER_EPOCH * EPOCHS
    for t, lr in enumerate(lrs):
        place = expected_place(t, budget.replans, length)
        assert lr == pytest.approx(PEAK * lr_factor(place, length, STEPS_PER_EPOCH, PEAK,
                                                    scheduler), rel=1e-9, abs=1e-12), t
    # it ends where the schedule ends, on the last step
    assert lrs[-1] == pytest.approx(PEAK * lr_factor(length - 1, length, STEPS_PER_EPOCH,
                                                     PEAK, scheduler), rel=1e-9)
    # no jump at a re-plan larger than the schedule's own largest step-to-step change
    changes = [abs(b - a) for a, b in itertools.pairwise(lrs)]
    at_replans = {r.step - 1 for r in budget.replans}
    own = max(c for i, c in enumerate(changes) if i not in at_replans)
    assert all(changes[i] <= own for i in at_replans if i < len(changes))


def test_a_restored_budget_replays_the_recorded_plan() -> None:
    budget, _, _ = simulate(150.0, halving)
    restored = StepBudget(150.0, STEPS_PER_EPOCH * EPOCHS, STEPS_PER_EPOCH)
    restored.restore(budget.recorded())
    assert restored.total == budget.total and restored.replans == budget.replans
    assert [restored.timeline(t) for t in range(budget.total)] == [
        budget.timeline(t) for t in range(budget.total)]
    # it times its own steps before it checks again: nothing due in its first steps
    assert not any(restored.after_step(800 + i, float(i)) for i in range(1, SKIPPED_STEPS
                                                                          + TIMED_STEPS))
    unbounded = StepBudget(None, 1000, 100)
    assert not unbounded.after_step(50, 1.0) and unbounded.record(50, 1.0) is None


def test_timeline_is_the_identity_without_re_plans() -> None:
    timeline = Timeline(1000)
    assert [timeline(t) for t in (0, 1, 500, 999, 1200)] == [0, 1, 500, 999, 999]
    stopped = Timeline(1000, [Replan(300, 300)])  # no steps left: the schedule's end
    assert stopped(299) == 299 and stopped(300) == 999


def test_time_steps_counts_calls_after_the_warmup() -> None:
    calls = []
    seconds = time_steps(lambda: calls.append(1), 7, warmup=3, sync=lambda: calls.append(0))
    assert calls == [1, 1, 1, 0, *[1] * 7, 0] and seconds >= 0


def test_the_record_gives_the_first_plan_when_it_kept_every_step() -> None:
    """Fast at first (every step fits), then 20 times slower: the re-plans cut the steps,
    and results.json still names the first plan, not the first re-plan."""
    budget, seconds, _ = simulate(150.0, lambda step: 0.01 if step < 500 else 0.2)
    assert budget.replans and budget.replans[0].total < STEPS_PER_EPOCH * EPOCHS
    record = budget.record(budget.total, seconds)
    assert record["planned_steps"] == STEPS_PER_EPOCH * EPOCHS
    assert [r["steps"] for r in record["replans"]] == [r.total for r in budget.replans]
    halved, seconds, _ = simulate(150.0, halving)  # the first plan already cut the steps
    assert halved.record(halved.total, seconds)["planned_steps"] == halved.replans[0].total
