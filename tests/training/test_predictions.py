"""Per-image test predictions: written by every run, equal to a forward pass done here,
put back in the split's order when several processes shared the split, and read back
with clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cnnzoo.data.pipeline import Split, load_dataset
from cnnzoo.errors import CheckpointError
from cnnzoo.model.devices import autocast
from cnnzoo.runs import rundir
from cnnzoo.runs.load import load_run_model, run_transform, trained_precision
from cnnzoo.runs.predictions import PREDICTIONS, Predictions, read_predictions, write_predictions
from cnnzoo.training.evaluation import _per_image


@pytest.mark.parametrize("name", ["small", "dense"])
def test_a_run_keeps_its_test_predictions(trained, name):
    run_dir = trained[name]
    kept = read_predictions(run_dir / PREDICTIONS)
    results = json.loads((run_dir / "results.json").read_text())
    assert (kept.split, kept.dataset, len(kept)) == ("test", "fashion_mnist", 200)
    assert kept.accuracy == results["test_accuracy"]

    run = rundir.open_run(run_dir)
    model = load_run_model(run, torch.device("cpu"))
    data = load_dataset(run.config.data, model.plan.input, 10, seed=run.config.train.seed,
                        data_root=str(trained["data"]), splits=("test",))
    images, labels = next(data.test.eval_batches(len(data.test)))
    cpu = torch.device("cpu")
    with torch.no_grad(), autocast(cpu, trained_precision(run, cpu)):  # as the run tested
        logits = model(run_transform(run, cpu).normalize(images)).float()
    scores, classes = logits.softmax(1).topk(3, 1)
    assert np.array_equal(kept.labels, labels.numpy())
    assert np.array_equal(kept.predicted, logits.argmax(1).numpy())
    assert np.array_equal(kept.top_classes, classes.numpy())
    assert np.allclose(kept.top_scores, scores.numpy(), atol=1e-6)


class FakeRank:
    """One process of `world` as `_per_image` sees it; the sums over processes are left
    to the test, which adds the processes' answers up itself."""

    def __init__(self, rank: int, world: int, batch: int) -> None:
        self.rank, self.world, self.active, self.batch = rank, world, True, batch

    def sum_int(self, tensor: torch.Tensor) -> int:
        return self.batch  # rank 0's first batch, which is what the real sum gives

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 3, 2), (100, 7, 3), (5, 8, 2),
                                                    (64, 16, 4)])
def test_shared_out_predictions_come_back_in_the_split_order(n, batch, world):
    labels = torch.arange(n) % 10
    split = Split(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), labels)
    total = None
    for rank in range(world):
        parts = []
        for _, got in split.eval_batches(batch, rank, world):
            # A stand-in network: predicts (label + 1) % 10 with made-up scores.
            scores = torch.stack([got.float(), got.float() / 2, got.float() / 4], 1)
            parts.append((got, (got + 1) % 10, torch.stack([got, got, got], 1), scores))
        share = _per_image(parts, n, 3, torch.device("cpu"), FakeRank(rank, world, batch))
        columns = [share.labels, share.predicted, share.top_classes, share.top_scores]
        total = columns if total is None else [a + b for a, b in zip(total, columns,
                                                                      strict=True)]
    assert torch.equal(total[0], labels)
    assert torch.equal(total[1], (labels + 1) % 10)
    assert torch.equal(total[2], torch.stack([labels] * 3, 1))
    assert torch.equal(total[3][:, 1], labels.float() / 2)


def _sample(n: int = 12) -> Predictions:
    labels = np.arange(n) % 4
    return Predictions(labels, (labels + (np.arange(n) % 3 == 0)) % 4,
                       np.stack([labels] * 2, 1), np.full((n, 2), 0.5, np.float32),
                       "val", "cifar10")


def test_a_predictions_file_reads_back(tmp_path):
    sample = _sample()
    write_predictions(tmp_path / "p.npz", sample)
    back = read_predictions(tmp_path / "p.npz")
    assert (back.split, back.dataset) == ("val", "cifar10")
    assert np.array_equal(back.labels, sample.labels)
    assert np.array_equal(back.predicted, sample.predicted)
    assert back.accuracy == pytest.approx(8 / 12)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temp file left


def test_a_missing_or_damaged_predictions_file_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="cnnzoo eval RUN --predictions"):
        read_predictions(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"junk\.npz is damaged"):
        read_predictions(tmp_path / "junk.npz")
    np.savez(tmp_path / "half.npz", label=np.zeros(3))
    with pytest.raises(CheckpointError, match="has no index"):
        read_predictions(tmp_path / "half.npz")
    sample = _sample()
    write_predictions(tmp_path / "short.npz", replace(sample, predicted=sample.predicted[:5]))
    with pytest.raises(CheckpointError, match="do not describe the same images"):
        read_predictions(tmp_path / "short.npz")
