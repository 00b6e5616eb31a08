"""A time-budgeted run end to end on fake data: what it records about the epochs and
steps it ran."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest

import cnnzoo
import cnnzoo.training.budget
from cnnzoo.training.trainer import fit
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

BUDGETED = """\
    model: {layers: [{conv: {filters: 8, kernel: 3, padding: same}}, relu, {pool: 4},
                     {fc: 10}]}
    data: {dataset: fashion_mnist, val_split: 0.1, augment: {flip: true}}
    train: {epochs: 5, batch_size: 32, optimizer: {name: sgd, lr: 0.05, momentum: 0.9},
            scheduler: onecycle, time_budget: 1000}
    """


@pytest.mark.slow
def test_a_budgeted_run_records_the_epochs_it_ran(tmp_path: Path, monkeypatch) -> None:
    """5 epochs of 16 steps configured, 27 steps fit: 2 epochs run (the second cut
    short), and results.json, metrics.csv's test row and the epoch lines say 2."""
    write_mnist(tmp_path / "data")
    monkeypatch.setattr(cnnzoo.training.budget, "steps_within", lambda *args: 27)
    config = cnnzoo.load_config(write(tmp_path / "b.yaml", textwrap.dedent(BUDGETED)))
    run = tmp_path / "run"
    result = fit(config, out=run, data_root=str(tmp_path / "data"), show_progress=False)
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 27 and results["epochs_run"] == round(27 / 16, 3)
    assert results["epochs"] == 2 and results["epochs_configured"] == 5
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows if r["split"] == "train"] == ["1", "2"]
    assert [r["epoch"] for r in rows if r["split"] == "test"] == ["2"]
    assert [m.epoch for m in result.history if m.split == "train"] == [1, 2]
