"""A time-budgeted run end to end on fake data: the steps and epochs it records, a
resume across a re-plan (on a simulated clock), and a real slowdown."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import cnnzoo
from cnnzoo.runs.checkpoint import load_weights
from cnnzoo.training.budget import SKIPPED_STEPS, TIMED_STEPS
from cnnzoo.training.callbacks import Callback
from cnnzoo.training.step import TrainStep
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

BUDGETED = """\
    model: {{layers: [{{conv: {{filters: {filters}, kernel: 3, padding: same}}}}, relu,
                      {{pool: 4}}, {{fc: 10}}]}}
    data: {{dataset: fashion_mnist, val_split: 0.1, augment: {{flip: true}}}}
    train: {{epochs: {epochs}, batch_size: 32, scheduler: onecycle, time_budget: {budget},
            optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}}}
    """


def budgeted(tmp_path: Path, budget: float, epochs: int = 5, filters: int = 8) -> Any:
    text = BUDGETED.format(budget=budget, epochs=epochs, filters=filters)
    return cnnzoo.load_config(write(tmp_path / "b.yaml", textwrap.dedent(text)))


class SimulatedClock:
    """A machine on which the i-th step (counted from `start`) takes seconds_of(i)."""

    def __init__(self, seconds_of: Callable[[int], float], start: int = 0) -> None:
        self.seconds_of = seconds_of
        self.steps = start
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.seconds_of(self.steps)
        self.steps += 1


@pytest.fixture
def machine(monkeypatch) -> Callable[..., SimulatedClock]:
    """Makes the simulated clock that every optimizer step of the next run advances."""
    current: dict[str, SimulatedClock] = {}
    update = TrainStep.update

    def timed_update(self: TrainStep) -> None:
        update(self)
        current["clock"].tick()

    monkeypatch.setattr(TrainStep, "update", timed_update)

    def make(seconds_of: Callable[[int], float], start: int = 0) -> SimulatedClock:
        current["clock"] = SimulatedClock(seconds_of, start)
        return current["clock"]

    return make


@pytest.fixture
def data_root(tmp_path: Path) -> str:
    write_mnist(tmp_path / "data")  # 540 training images: 16 steps of 32 an epoch
    return str(tmp_path / "data")


@pytest.mark.slow
def test_a_budgeted_run_records_the_epochs_it_ran(tmp_path, data_root, machine) -> None:
    """5 epochs of 16 steps configured, a second a step, 27 s: the first plan (after 25
    steps) fits 27 steps, 2 epochs, the second cut short; results.json, metrics.csv's
    test row and the epoch lines say 2."""
    run = tmp_path / "run"
    result = fit(budgeted(tmp_path, 27), out=run, data_root=data_root, show_progress=False,
                 clock=machine(lambda step: 1.0))
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 27 and results["epochs_run"] == round(27 / 16, 3)
    assert results["epochs"] == 2 and results["epochs_configured"] == 5
    assert results["budget"] == {"seconds": 27.0, "planned_steps": 27, "steps": 27,
                                 "replans": [{"step": 25, "steps": 27}],
                                 "loop_seconds": 27.0, "over": 0.0}
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows if r["split"] == "train"] == ["1", "2"]
    assert [r["epoch"] for r in rows if r["split"] == "test"] == ["2"]
    assert [m.epoch for m in result.history if m.split == "train"] == [1, 2]


def slowing(step: int) -> float:
    return 1.0 if step < 30 else 2.0


@pytest.mark.slow
def test_resume_across_a_re_plan_is_bitwise_the_straight_run(tmp_path, data_root, machine,
                                                             capsys) -> None:
    """The machine halves its speed after 30 steps: the first plan, 150 steps of a 150 s
    budget, is cut as the recent speed shows the slowdown, to the 90 that fit (30 s for
    the first 30 steps, 120 s for 60 more). A run interrupted after the last re-plan
    replays them and ends with bitwise the same weights and step log; one interrupted
    before them re-plans from its own timing."""
    config = budgeted(tmp_path, 150, epochs=10)
    straight = fit(config, out=tmp_path / "straight", data_root=data_root,
                   clock=machine(slowing)).results["budget"]
    assert straight["replans"][0] == {"step": SKIPPED_STEPS + TIMED_STEPS, "steps": 150}
    assert len(straight["replans"]) >= 2 and straight["steps"] == 90
    assert straight["loop_seconds"] == 150.0
    assert "re-planned 150 -> " in capsys.readouterr().out
    reference = load_weights(tmp_path / "straight" / "model.safetensors")[0]

    stop = straight["replans"][-1]["step"] + 1
    parted = tmp_path / "parted"
    with pytest.raises(Interrupted):
        fit(config, out=parted, data_root=data_root, show_progress=False,
            stop_after_steps=stop, clock=machine(slowing))
    resumed = fit(config, resume=parted, data_root=data_root, show_progress=False,
                  clock=machine(slowing, start=stop)).results["budget"]
    assert resumed["replans"] == straight["replans"]
    weights = load_weights(parted / "model.safetensors")[0]
    assert all(torch.equal(reference[k], weights[k]) for k in reference)
    assert (tmp_path / "straight" / "steps.csv").read_text() == (parted / "steps.csv").read_text()

    early = tmp_path / "early"
    with pytest.raises(Interrupted):
        fit(config, out=early, data_root=data_root, show_progress=False,
            stop_after_steps=30, clock=machine(slowing))
    own = fit(config, resume=early, data_root=data_root, show_progress=False,
              clock=machine(slowing, start=30)).results["budget"]
    assert own["replans"][0] == straight["replans"][0]
    assert all(r["step"] >= 30 + SKIPPED_STEPS + TIMED_STEPS for r in own["replans"][1:])


@pytest.mark.slow
def test_a_run_interrupted_before_its_first_plan_makes_it_from_its_own_steps(
        tmp_path, data_root, machine) -> None:
    config = budgeted(tmp_path, 27)
    with pytest.raises(Interrupted):
        fit(config, out=tmp_path / "run", data_root=data_root, show_progress=False,
            stop_after_steps=3, clock=machine(lambda step: 1.0))
    results = fit(config, resume=tmp_path / "run", data_root=data_root, show_progress=False,
                  clock=machine(lambda step: 1.0, start=3)).results
    assert results["budget"]["replans"] == [{"step": 3 + SKIPPED_STEPS + TIMED_STEPS,
                                             "steps": 28}]
    assert results["steps"] == 28


class Hog(Callback):
    """Busy loops on both cores from the end of the first epoch to the end of the run."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def on_epoch_end(self, ctx: Any, epoch: int, metrics: Any, model: Any) -> None:
        if epoch == 0:
            self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                              for _ in range(2)]

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_real_slowdown_is_re_planned(tmp_path) -> None:
    """Two busy loops start after the first (short) epoch: the run plans (or, on a
    machine so busy that the budget is spent first, stops) and its loop ends within
    the budget + 5%, with a second's slack for the last step and validation."""
    write_mnist(tmp_path / "data")
    hog = Hog()
    try:
        results = fit(budgeted(tmp_path, 20, epochs=200, filters=16), out=tmp_path / "run",
                      data_root=str(tmp_path / "data"), show_progress=False,
                      callbacks=[hog]).results
    finally:
        hog.stop()
    budget = results["budget"]
    assert hog.processes and budget["steps"] < 200 * 16
    assert budget["replans"] and budget["steps"] == budget["replans"][-1]["steps"], budget
    assert budget["loop_seconds"] <= 20 * 1.05 + 1.0, budget
