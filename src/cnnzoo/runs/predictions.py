"""Per-image predictions on a split, kept beside a run: which class each image is,
which the network chose, and the scores of its most likely classes.

Every run writes its test set's as `predictions.npz` (compressed numpy arrays, read
back without pickle); `cnnzoo eval --predictions FILE` writes them for any split.
`cnnzoo compare` pairs two runs' files image by image for its tests.

    index        (N,) int32     the image's position in the split
    label        (N,) int16     its true class
    predicted    (N,) int16     the class the network chose
    top_classes  (N, K) int16   the K most likely classes, most likely first
    top_scores   (N, K) float32 their softmax scores
    split, dataset              which images these are
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnzoo.errors import CheckpointError
from cnnzoo.utils.files import atomic_write_bytes

PREDICTIONS = "predictions.npz"
TOP_CLASSES = 3  # the scores kept per image: enough for a top-3 look, small on disk


@dataclass(frozen=True)
class Predictions:
    """One split's per-image results, in the split's order."""

    labels: np.ndarray  # (N,) true classes
    predicted: np.ndarray  # (N,) chosen classes
    top_classes: np.ndarray  # (N, K) most likely first
    top_scores: np.ndarray  # (N, K) softmax scores of top_classes
    split: str
    dataset: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the images the network got right."""
        return self.labels == self.predicted

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self) else 0.0


def write_predictions(path: Path, predictions: Predictions) -> None:
    """Write `predictions` to `path` atomically (a reader sees the old file or the new)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        index=np.arange(len(predictions), dtype=np.int32),
        label=predictions.labels.astype(np.int16),
        predicted=predictions.predicted.astype(np.int16),
        top_classes=predictions.top_classes.astype(np.int16),
        top_scores=predictions.top_scores.astype(np.float32),
        split=np.array(predictions.split),
        dataset=np.array(predictions.dataset),
    )
    atomic_write_bytes(path, buffer.getvalue())


_ARRAYS = ("index", "label", "predicted", "top_classes", "top_scores", "split", "dataset")


def read_predictions(path: Path) -> Predictions:
    """A predictions file as written above; anything else is one clear error."""
    if not path.is_file():
        raise CheckpointError(f"no per-image predictions {path} (runs write them since this "
                              "version; write them with: cnnzoo eval RUN --predictions FILE)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _ARRAYS if key not in data.files]
            if missing:
                raise CheckpointError(f"{path} is damaged: it has no {', '.join(missing)}")
            arrays = {key: data[key] for key in _ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None
    n = len(arrays["label"])
    shapes_fit = (
        arrays["index"].shape == (n,) and arrays["predicted"].shape == (n,)
        and arrays["label"].ndim == 1 and arrays["top_classes"].ndim == 2
        and arrays["top_classes"].shape == arrays["top_scores"].shape
        and len(arrays["top_classes"]) == n
        and np.array_equal(arrays["index"], np.arange(n))
    )
    if not shapes_fit:
        raise CheckpointError(f"{path} is damaged: its arrays do not describe the same images")
    return Predictions(arrays["label"].astype(np.int64), arrays["predicted"].astype(np.int64),
                       arrays["top_classes"].astype(np.int64), arrays["top_scores"],
                       str(arrays["split"]), str(arrays["dataset"]))
