"""`cnnzoo train --seeds`: each seed's run is the single run with that seed, bit for
bit; the summary's statistics are numpy's; an interrupted parent resumes the seed it
stopped in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.runs.checkpoint import load_weights
from cnnzoo.runs.seeds import parse_seeds, write_seed_plan
from cnnzoo.training.seeds import fit_seeds
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.datafiles import write_mnist
from tests.training.test_train import small_config


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> dict[str, Path]:
    """A `--seeds 0,3` parent, and single runs with seeds 0 and 3, on fake files."""
    base = tmp_path_factory.mktemp("seeds")
    write_mnist(base / "data")
    config = small_config(base)
    from cnnzoo.cli.app import run

    code = run(["train", "-c", str(config), "--data-root", str(base / "data"), "--seeds", "0,3",
                "-o", str(base / "parent"), "-q"])
    assert code == 0
    for seed in (0, 3):
        fit(cnnzoo.load_config(config, [f"train.seed={seed}"]), out=base / f"single-{seed}",
            data_root=str(base / "data"), show_progress=False)
    return {"base": base, "config": config, "data": base / "data", "parent": base / "parent"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "model.safetensors")[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_each_seed_is_the_single_run_with_that_seed(seeded):
    parent = seeded["parent"]
    assert sorted(p.name for p in parent.iterdir()) == [
        "config.yaml", "seed-0", "seed-3", "seeds-summary.json", "seeds-summary.txt",
        "seeds.json"]
    for seed in (0, 3):
        assert_same_weights(parent / f"seed-{seed}", seeded["base"] / f"single-{seed}")
    first, second = weights(parent / "seed-0"), weights(parent / "seed-3")
    assert any(not torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_the_summary_holds_numpys_statistics(seeded):
    parent = seeded["parent"]
    summary = json.loads((parent / "seeds-summary.json").read_text())
    for key in ("test_accuracy", "train_seconds", "wall_seconds"):
        values = [json.loads((parent / f"seed-{s}" / "results.json").read_text())[key]
                  for s in (0, 3)]
        assert [r[key] for r in summary["runs"]] == values
        assert summary[key]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert summary[key]["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)
        assert (summary[key]["min"], summary[key]["max"]) == (min(values), max(values))
    text = (parent / "seeds-summary.txt").read_text()
    assert text.startswith("small: 2 seeds, ") and "\nmean " in text and "\nsd " in text


@pytest.mark.slow
def test_an_interrupted_parent_resumes_the_seed_it_stopped_in(seeded, cli):
    config = cnnzoo.load_config(seeded["config"])
    parent_dir = seeded["base"] / "stopped"
    parent = write_seed_plan(parent_dir, "small", [0, 3], config.to_yaml())
    shutil.copytree(seeded["parent"] / "seed-0", parent_dir / "seed-0")  # seed 0 finished

    def stop_in_seed_3(seed_config, run, started):
        fit(seed_config, out=run, data_root=str(seeded["data"]), show_progress=False,
            stop_after_steps=20 if seed_config.train.seed == 3 else None)

    with pytest.raises(Interrupted):  # at step 20 of 34
        fit_seeds(parent, config, stop_in_seed_3, show_progress=False)
    assert (parent_dir / "seed-3" / "state.pt").exists()
    assert not (parent_dir / "seed-3" / "results.json").exists()

    resumed = cli("train", "--resume", parent_dir, "--data-root", seeded["data"])
    assert resumed.code == 0, resumed.err
    assert f"seed 3 (2 of 2): resuming {parent_dir / 'seed-3'}" in resumed.out
    assert "seed 0 (" not in resumed.out  # a finished seed is left as it is
    assert_same_weights(parent_dir / "seed-3", seeded["base"] / "single-3")
    assert (parent_dir / "seeds-summary.txt").exists()

    again = cli("train", "--resume", parent_dir, "--data-root", seeded["data"])
    assert again.code == 2 and "all its seeds (2) are finished" in again.err


@pytest.mark.parametrize(("text", "seeds"), [("3", [0, 1, 2]), ("1", [0]), ("0,1,2", [0, 1, 2]),
                                             ("5,", [5]), (" 7, 2 ", [7, 2])])
def test_seeds_are_a_count_or_a_list(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "message"), [
    ("0", "from 1 to 1000"), ("many", "a count"), ("1,1", "seed 1 twice"),
    ("-1,2", "0 or more"), (",", "0 or more"), ("100000", "from 1 to 1000"),
])
def test_bad_seeds_are_refused(text, message):
    with pytest.raises(CnnzooError, match=message):
        parse_seeds(text)


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "2"], "--seeds needs --config"),
    (["--seeds", "x", "-c", "mlp"], "--seeds takes a count"),
])
def test_seeds_options_refused_before_anything_trains(tmp_path, cli, args, message):
    result = cli("train", *args, "-o", tmp_path / "p")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "p").exists()


def test_a_parent_is_resumed_alone_and_not_trained_into(tmp_path, cli):
    config = small_config(tmp_path)
    parent = tmp_path / "p"
    parent.mkdir()
    (parent / "seeds.json").write_text(json.dumps({"name": "small", "seeds": [0, 1]}))
    (parent / "config.yaml").write_text(config.read_text())
    both = cli("train", "--resume", parent, "--seeds", "2")
    assert both.code == 2 and "resume it with --resume alone" in both.err
    into = cli("train", "-c", config, "--seeds", "2", "-o", parent)
    assert into.code == 2 and "already exists and is not empty" in into.err
    single = cli("train", "--resume", tmp_path, "--seeds", "2")  # not a parent
    assert single.code == 2 and "--seeds starts new runs; --resume continues" in single.err
