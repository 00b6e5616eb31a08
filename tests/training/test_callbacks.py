"""What a run leaves beside its weights: the curves, confusion and filter pictures,
TensorBoard event files, and a failing picture that does not stop training."""

from __future__ import annotations

import json

import pytest

from cnnzoo.utils import pictures
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist
from tests.helpers.runs import SMALL, assert_png


@pytest.mark.slow
def test_training_writes_curves_confusion_and_filters(trained):
    for name in ("curves.png", "confusion.png", "filters.png"):
        assert_png(trained["small"] / name)
    assert_png(trained["small"] / "curves.png", (1000, 400))
    assert_png(trained["dense"] / "filters.png")  # the fc's rows as 28x28 images


def test_a_failing_picture_does_not_stop_training(tmp_path, cli, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(pictures, "confusion_figure", broken)
    monkeypatch.setattr("cnnzoo.training.callbacks.tensorboard_available", lambda: False)
    write_mnist(tmp_path / "data", n_train=200, n_test=50)
    config = write(tmp_path / "small.yaml", SMALL.replace("epochs: 2", "epochs: 1"))
    result = cli("train", "-c", config, "--data-root", tmp_path / "data", "-o", tmp_path / "r",
                 "-q")
    assert result.code == 0, result.err
    assert (tmp_path / "r" / "results.json").is_file()
    assert "warning: confusion.png was not written: RuntimeError: no ink" in result.err
    assert_png(tmp_path / "r" / "curves.png")
    assert not (tmp_path / "r" / "confusion.png").exists()
    assert not list((tmp_path / "r").glob("events.out.tfevents*"))  # no tensorboard: no files


def test_curves_are_redrawn_at_most_every_redraw_seconds(monkeypatch):
    from cnnzoo.training.callbacks import Pictures

    drawn = []
    monkeypatch.setattr(Pictures, "_curves", staticmethod(drawn.append))
    throttled = Pictures(redraw_seconds=3600)
    for epoch in range(3):
        throttled.on_epoch_end("first", epoch, [], None)
    assert drawn == []
    throttled.drawn_at -= 3600  # an hour of training later
    for epoch in range(3):
        throttled.on_epoch_end("later", epoch, [], None)
    assert drawn == ["later"]
    every = Pictures(redraw_seconds=0)
    for epoch in range(3):
        every.on_epoch_end("each", epoch, [], None)
    assert drawn == ["later", "each", "each", "each"]


def test_tensorboard_event_files(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(trained["small"].glob("events.out.tfevents*"))
    events = EventAccumulator(str(trained["small"]), size_guidance={"images": 0})
    events.Reload()
    results = json.loads((trained["small"] / "results.json").read_text())
    val = events.Scalars("accuracy/val")
    assert [e.step for e in val] == [1, 2]
    assert events.Scalars("accuracy/test")[0].value == pytest.approx(results["test_accuracy"])
    assert set(events.Tags()["images"]) == {"curves", "confusion", "filters"}
