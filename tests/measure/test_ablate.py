"""scripts/ablate.py: a run's weights under every TTA mode, and a config's variants
trained and tabled."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.common import ROOT, write
from tests.helpers.datafiles import write_mnist
from tests.training.test_ema import ema_runs  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def ablate():
    spec = importlib.util.spec_from_file_location("ablate", ROOT / "scripts" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_views_evaluates_the_saved_and_the_raw_weights(ablate, ema_runs, cli):  # noqa: F811
    from cnnzoo.data.pipeline import load_dataset
    from cnnzoo.model.devices import autocast
    from cnnzoo.runs import rundir
    from cnnzoo.runs.checkpoint import load_state
    from cnnzoo.runs.load import load_run_model, trained_precision

    straight, _, data = ema_runs
    rows = ablate.view_table(straight, str(data))
    modes = ["none", "flip", "shift", "flip_shift"]
    assert [(r["weights"].split()[0], r["tta"]) for r in rows] == (
        [("saved", m) for m in modes] + [("raw,", m) for m in modes])
    # The saved weights are what `cnnzoo eval --split val` evaluates, mode for mode.
    for row in rows[:4]:
        result = cli("eval", straight, "--split", "val", "--tta", row["tta"], "--json",
                     "--data-root", data)
        assert result.code == 0, result.err
        assert json.loads(result.out)["accuracy"] == row["val"]
    # The raw weights are the last step's, from state.pt: applied here by hand.
    run = rundir.open_run(straight)
    cpu = torch.device("cpu")
    model = load_run_model(run, cpu)
    model.load_state_dict(load_state(straight / "state.pt")["model"])
    split = load_dataset(run.config.data, model.plan.input, 10, seed=run.config.train.seed,
                         data_root=str(data), splits=("train", "val")).val
    x = (split.images.float() / 255 - run.info["mean"][0]) / run.info["std"][0]
    with torch.no_grad(), autocast(cpu, trained_precision(run, cpu)):
        predicted = model(x).float().argmax(1)
    assert rows[4]["val"] == pytest.approx((predicted == split.labels).float().mean().item(),
                                           abs=1 / len(split.labels))
    assert rows[4]["loss"] != rows[0]["loss"]  # two different sets of weights


SMALL = """
model:
  layers:
    - input: {width: 28, height: 28, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: 1}
    - pool: 4
    - relu
    - fc: 10
data:
  dataset: fashion_mnist
  val_split: 0.2
train:
  epochs: 1
  batch_size: 32
"""


@pytest.mark.slow
def test_train_tables_each_variant_against_the_config(tmp_path):
    write_mnist(tmp_path / "data", n_train=200, n_test=50)
    config = write(tmp_path / "small.yaml", SMALL)
    command = [sys.executable, str(ROOT / "scripts" / "ablate.py"), "train", str(config),
               "--set", "train.seed=3", "--variant", "flips: data.augment.flip=true",
               "--variant", "two epochs: train.epochs=2", "--runs", str(tmp_path / "runs")]
    env = {**os.environ, "CNNZOO_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    rows = [line for line in first.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| as configured", "| flips", "| two epochs"]
    for row, folder in zip(rows, ["as-configured", "flips", "two-epochs"], strict=True):
        results = json.loads((tmp_path / "runs" / folder / "results.json").read_text())
        assert f"| {results['val_accuracy']:.2%} |" in row
        config_text = (tmp_path / "runs" / folder / "config.yaml").read_text()
        assert "seed: 3" in config_text
    assert "| `train.epochs=2` |" in rows[2] and "| 2.0 |" in rows[2]
    # Again with --reuse: nothing is trained, the same table comes back.
    again = subprocess.run([*command, "--reuse"], capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reused ") == 3
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")][1:] == rows


def test_train_refuses_a_config_without_a_validation_split_before_training(tmp_path):
    """fashion-best trains on all 60,000 images; an ablation of it without
    --set data.val_split=... would train for nothing and then have no column to table."""
    runs_dir = tmp_path / "runs"
    command = [sys.executable, str(ROOT / "scripts" / "ablate.py"), "train", "fashion-best",
               "--variant", "no erasing: data.augment.erase=0", "--runs", str(runs_dir)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "no validation split" in refused.stderr
    assert "--set data.val_split=0.1" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not runs_dir.exists()  # nothing trained, nothing written
    # A variant that drops the split is refused as well, by its label.
    config = write(tmp_path / "small.yaml", SMALL)
    command = [sys.executable, str(ROOT / "scripts" / "ablate.py"), "train", str(config),
               "--variant", "all data: data.val_split=0", "--runs", str(runs_dir)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: all data:")
    # A variant that does not load (an unknown key) is one line too.
    command[-3] = "typo: data.augment.flipp=true"
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: typo:") and "flipp" in refused.stderr
    assert not runs_dir.exists()


def test_views_refuses_a_missing_run_or_one_without_a_validation_split(tmp_path, cli):
    views = [sys.executable, str(ROOT / "scripts" / "ablate.py"), "views"]
    refused = subprocess.run([*views, str(tmp_path / "nothing-here")], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    # A finished run trained on all its images: there is nothing to compare the views on.
    write_mnist(tmp_path / "data", n_train=64, n_test=16)
    config = write(tmp_path / "all.yaml", SMALL.replace("val_split: 0.2", "val_split: 0"))
    trained = cli("train", "--config", config, "--data-root", tmp_path / "data", "--device",
                  "cpu", "--out", tmp_path / "run")
    assert trained.code == 0, trained.err
    refused = subprocess.run([*views, str(tmp_path / "run"), "--data-root",
                              str(tmp_path / "data")], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no validation split" in refused.stderr
    assert "--set data.val_split=0.1" in refused.stderr
