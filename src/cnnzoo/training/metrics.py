"""What an epoch (or the test) measured, as numbers, and what a finished run returns.
The numbers are turned into text only here, where they are written: a metrics.csv row
and the epoch line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EpochMetrics:
    """One split's numbers for one epoch (or the test set at the end)."""

    epoch: int  # 1-based, as metrics.csv and the epoch line count
    split: str  # "train", "val" or "test"
    loss: float
    accuracy: float  # a fraction, 0..1
    seconds: float  # time spent on this split in this epoch
    images_per_s: float
    lr: float | None = None  # the learning rate at the epoch's end (train only)

    def csv_row(self) -> dict[str, str]:
        """The row of metrics.csv (runs.METRIC_FIELDS)."""
        return {
            "epoch": str(self.epoch),
            "split": self.split,
            "loss": f"{self.loss:.6f}",
            "accuracy": f"{self.accuracy:.6f}",
            "lr": "" if self.lr is None else f"{self.lr:.6g}",
            "seconds": f"{self.seconds:.3f}",
            "images_per_s": f"{self.images_per_s:.1f}",
        }


@dataclass
class TrainResult:
    """A finished run: its directory, results.json's record, every epoch's numbers."""

    run_dir: Path
    results: dict[str, Any]
    history: list[EpochMetrics] = field(default_factory=list)


def rate(images: int, seconds: float) -> float:
    return images / max(seconds, 1e-9)


def epoch_line(epochs: int, metrics: list[EpochMetrics]) -> str:
    """`epoch 3/10  train loss 0.4 acc 85.00%  val ...  lr 0.01  4.2s  1,234 img/s`;
    `metrics` starts with the train split."""
    train = metrics[0]
    parts = [f"epoch {train.epoch}/{epochs}"]
    parts += [f"{m.split} loss {m.loss:.4f} acc {m.accuracy:.2%}" for m in metrics]
    parts.append(f"lr {train.lr or 0.0:.3g}")
    parts.append(f"{train.seconds:.1f}s")
    parts.append(f"{train.images_per_s:,.0f} img/s")
    return "  ".join(parts)
