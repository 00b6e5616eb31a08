"""Zoo records with seed statistics: `cnnzoo zoo` and docs/results.md show the seeds'
mean +- sd (numpy's, with n - 1), and records without seeds read as before."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import cnnzoo
from cnnzoo.config.bundled import write_measured
from cnnzoo.zoo.catalog import seed_spread
from tests.helpers.common import ROOT
from tests.zoo.test_results_script import RECORD

ACCURACIES = [0.9081, 0.9112, 0.9047]
SEEDS = [{"seed": i, "test_accuracy": a, "train_seconds": 60.0 + i, "wall_seconds": 70.0 + i}
         for i, a in enumerate(ACCURACIES)]


def expected_text(values: list[float]) -> str:
    return f"{np.mean(values):.2%} +- {100 * np.std(values, ddof=1):.2f}"


def test_zoo_shows_mean_and_sd_over_seeds(cli, tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    records = {}
    for name in ("lenet5", "mlp"):
        shutil.copy(ROOT / "configs" / f"{name}.yaml", folder)
        plan = cnnzoo.plan_experiment(cnnzoo.load_config(folder / f"{name}.yaml"))
        records[name] = {"test_accuracy": 0.9081 if name == "lenet5" else 0.8899,
                         "params": plan.total_params, "macs": plan.total_macs,
                         "dataset": "fashion_mnist", "epochs": 10}
    records["lenet5"]["seeds"] = SEEDS  # mlp's record is of the older kind, without seeds
    write_measured(records, folder)
    monkeypatch.setattr("cnnzoo.config.bundled.BUNDLED_DIRS", (folder,))
    result = cli("zoo")
    assert result.code == 0, result.err
    rows = {line.split()[0]: line for line in result.out.splitlines()[1:]}
    assert expected_text(ACCURACIES) in rows["lenet5"]
    assert "fashion_mnist, 10 epochs, 3 seeds" in rows["lenet5"]
    assert "88.99%" in rows["mlp"] and "+-" not in rows["mlp"] and "seeds" not in rows["mlp"]
    data = {e["name"]: e for e in json.loads(cli("zoo", "--json").out)}
    spread = data["lenet5"]["seed_statistics"]
    assert spread["count"] == 3 and spread["mean"] == pytest.approx(np.mean(ACCURACIES))
    assert spread["sd"] == pytest.approx(np.std(ACCURACIES, ddof=1))
    assert data["mlp"]["seed_statistics"] is None and data["mlp"]["test_accuracy"] == 0.8899


@pytest.mark.parametrize("seeds", [None, [], SEEDS[:1], [{"seed": 0, "test_accuracy": "x"},
                                                          {"seed": 1, "test_accuracy": 0.9}],
                                   "three", [1, 2]])
def test_records_without_two_readable_seeds_show_their_one_number(seeds):
    assert seed_spread({**RECORD, "seeds": seeds}) is None


def test_results_markdown_shows_seeds(script):
    records = {"lenet5": {**RECORD, "seeds": SEEDS}, "mlp": {**RECORD, "params": 247_766,
                                                             "macs": 247_272}}
    machine = {"cpu": "x", "cores": 2, "torch": "2.14.1", "python": "3.11.9", "cnnzoo": "0.1"}
    text = script.report.render_markdown(records, ["lenet5", "mlp"], {}, machine, "none",
                                         "python x", None)
    median = f"{np.median(ACCURACIES):.2%}"
    assert (f"| `lenet5` | 61,706 | 416,520 | {expected_text(ACCURACIES)} (3 seeds, median "
            f"{median}) | 10 |") in text
    assert "| `mlp` | 247,766 | 247,272 | 90.81% | 10 |" in text
    points = {p.label: p for p in script.report.record_points(records)}
    assert points["lenet5"].accuracy_sd == pytest.approx(np.std(ACCURACIES, ddof=1))
    assert points["lenet5"].accuracy == pytest.approx(np.mean(ACCURACIES))  # at the mean
    assert points["mlp"].accuracy_sd is None
