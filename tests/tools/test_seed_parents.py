"""eval and viz on a `train --seeds` parent, and `eval --predictions` for any split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cnnzoo.runs.predictions import PREDICTIONS, read_predictions
from cnnzoo.runs.seeds import write_seed_plan
from tests.helpers.runs import assert_png, image_file

pytestmark = pytest.mark.slow  # evaluates runs trained end to end (the `trained` fixture)


@pytest.fixture
def parent(trained, tmp_path):
    """A parent whose seeds 0 and 4 are copies of the trained `small` run."""
    config = (trained["small"] / "config.yaml").read_text()
    made = write_seed_plan(tmp_path / "parent", "small", [0, 4], config)
    for run in made.runs:
        shutil.copytree(trained["small"], run)
    return made.path


def test_eval_on_a_parent_evaluates_every_seed(parent, trained, cli, tmp_path):
    result = cli("eval", parent, "--json", "--data-root", trained["data"], "--predictions",
                 tmp_path / "test.npz")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    expected = json.loads((trained["small"] / "results.json").read_text())["test_accuracy"]
    assert [s["seed"] for s in data["seeds"]] == [0, 4]
    assert [s["accuracy"] for s in data["seeds"]] == [expected, expected]
    assert data["accuracy"]["mean"] == pytest.approx(np.mean([expected, expected]))
    assert data["accuracy"]["sd"] == 0.0
    kept = read_predictions(trained["small"] / PREDICTIONS)
    for seed in (0, 4):  # eval's predictions are those the run kept when it was tested
        written = read_predictions(tmp_path / f"test-seed-{seed}.npz")
        assert np.array_equal(written.labels, kept.labels)
        assert np.array_equal(written.predicted, kept.predicted)
    shown = cli("eval", parent, "--data-root", trained["data"])
    assert shown.code == 0 and "2 seeds, accuracy" in shown.out


def test_eval_writes_predictions_for_another_split(trained, cli, tmp_path):
    out = tmp_path / "val.npz"
    result = cli("eval", trained["small"], "--split", "val", "--json", "--data-root",
                 trained["data"], "--predictions", out)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    written = read_predictions(out)
    assert (written.split, written.dataset, len(written)) == ("val", "fashion_mnist",
                                                              data["samples"])
    assert written.accuracy == pytest.approx(data["accuracy"])
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (written.labels, written.predicted), 1)
    assert confusion.tolist() == data["confusion"]


def test_eval_predictions_to_a_folder_that_cannot_be_written_is_refused(trained, cli, tmp_path):
    result = cli("eval", trained["small"], "--data-root", trained["data"], "--predictions",
                 tmp_path / "no" / "such" / "p.npz")
    assert result.code == 2 and result.out == ""  # refused before anything is evaluated
    assert result.err.startswith("error: cannot write ") and "p.npz" in result.err


def test_viz_on_a_parent_draws_its_first_seed(parent, cli, tmp_path):
    image = image_file(tmp_path)
    result = cli("viz", parent, "--image", image)
    assert result.code == 0, result.err
    assert "seed 0 of 2" in result.err
    drawn = parent / "seed-0" / f"activations-{image.stem}.png"
    assert result.out.strip() == str(drawn)
    assert_png(drawn)
