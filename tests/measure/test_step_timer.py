"""The one step timer: the zoo's estimate and the benchmarks time steps through
`training.budget.time_steps`, the step the trainer runs."""

from __future__ import annotations

import textwrap

import pytest
import torch

import cnnzoo
import cnnzoo.training.budget
from cnnzoo.measure import benchmarks
from cnnzoo.model.plan import plan_experiment
from cnnzoo.zoo import measure
from tests.helpers.common import write

TINY = """\
    model: {layers: [{input: {width: 8, height: 8, depth: 1}},
                     {conv: {filters: 4, kernel: 3, padding: same}}, relu, {fc: 3}]}
    train: {batch_size: 4}
    """


@pytest.fixture
def config(tmp_path):
    return cnnzoo.load_config(write(tmp_path / "tiny.yaml", textwrap.dedent(TINY)))


def test_the_zoo_and_the_benchmarks_time_steps_with_the_one_timer(config, monkeypatch):
    calls = []

    def recording(step, steps, *, warmup=0, sync=None):
        for _ in range(warmup + steps):
            step()
        calls.append((steps, warmup))
        return 0.25

    monkeypatch.setattr(cnnzoo.training.budget, "time_steps", recording)
    monkeypatch.setattr(benchmarks, "time_steps", recording)
    assert measure.measure_step_seconds(config, plan_experiment(config), "cpu", steps=3) == 0.25
    assert calls == [(3, 1)]
    timer = benchmarks.step_timer(cnnzoo.build_model(config), config, 4, 5, torch.device("cpu"))
    assert timer() == 5 * 0.25  # seconds for all 5 steps
    assert calls[1:] == [(0, 3), (5, 0)]


def test_a_measured_step_takes_time(config):
    seconds = measure.measure_step_seconds(config, plan_experiment(config), "cpu", steps=2)
    assert 0 < seconds < 10
