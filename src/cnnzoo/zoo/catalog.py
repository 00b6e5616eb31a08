"""`cnnzoo zoo`: the bundled configs, what they cost, and how well they did here.

The accuracy comes from `results.json` next to the configs, which
`scripts/zoo_results.py` writes from real training runs; a config without a
measurement says so. A measurement whose parameters or mult-adds no longer match
the config (the config changed since) is shown as stale, not as the config's.

A record may carry `seeds`, one entry per seed ({"seed", "test_accuracy",
"train_seconds", "wall_seconds"}, as `train --seeds` summarises them); with two or
more, the zoo shows the seeds' mean +- sd. Records without it stay valid. The record's
own numbers and its shipped weights are one seed's (`pretrained.seed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from cnnzoo.utils.spread import mean_sd_text, statistics

FULL_TRAIN_IMAGES = 54_000  # Fashion-MNIST's 60,000 less the 10% held out for validation


@dataclass(frozen=True)
class ZooEntry:
    name: str
    path: Path
    dataset: str | None
    input: str
    params: int
    macs: int
    measured: dict[str, Any] | None
    stale: bool  # measured, but the config has changed since

    @property
    def accuracy(self) -> float | None:
        if self.measured is None or self.stale:
            return None
        return float(self.measured["test_accuracy"])


def zoo_entries(directory: Path | None = None) -> list[ZooEntry]:
    """Every config in `directory` (default: the bundled ones), planned, with its
    measured result if there is one."""
    from cnnzoo.config.bundled import bundled_configs, bundled_dir, read_measured
    from cnnzoo.config.experiment import load_config
    from cnnzoo.model.plan import plan_experiment

    if directory is None:
        configs = bundled_configs()
        directory = bundled_dir()
    else:
        configs = {p.stem: p for p in sorted(directory.glob("*.yaml"))}
    measured = read_measured(directory)
    entries = []
    for name, path in configs.items():
        config = load_config(path)
        plan = plan_experiment(config)
        record = measured.get(name)
        stale = record is not None and (
            record.get("params") != plan.total_params or record.get("macs") != plan.total_macs
        )
        entries.append(ZooEntry(name, path, config.data.dataset, str(plan.input),
                                plan.total_params, plan.total_macs, record, stale))
    return entries


def seed_spread(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The mean, sd, min, max and median of a record's seeds' test accuracy and their
    count, or None where it has fewer than two seeds (or none that read as numbers)."""
    seeds = (record or {}).get("seeds")
    if not isinstance(seeds, list):
        return None
    values = [s.get("test_accuracy") for s in seeds if isinstance(s, dict)]
    if len(values) < 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  for v in values):
        return None
    numbers = [float(v) for v in values]
    return {**statistics(numbers), "median": median(numbers), "count": len(numbers)}


def headline_accuracy(record: dict[str, Any]) -> float:
    """The one number that stands for a record where one is shown: its seeds' median
    (an odd count's median is a real run's accuracy, and one bad seed does not move it),
    or its one test accuracy."""
    spread = seed_spread(record)
    return float(spread["median"] if spread else record["test_accuracy"])


def accuracy_text(record: dict[str, Any]) -> str:
    """'91.20% +- 0.15' over a record's seeds, or its one test accuracy."""
    spread = seed_spread(record)
    return mean_sd_text(spread) if spread else f"{float(record['test_accuracy']):.2%}"


def measured_text(entry: ZooEntry) -> tuple[str, str]:
    """(accuracy, what it was measured on) for the table."""
    record = entry.measured
    if record is None:
        return "-", "not yet measured"
    if entry.stale:
        return "-", "stale: the config changed since it was measured"
    epochs = record.get("epochs")
    detail = str(record.get("dataset", "?")) + (" (adapted)" if record.get("adapted") else "")
    if epochs:
        detail += f", {epochs} epoch" + ("s" if epochs != 1 else "")
    spread = seed_spread(record)
    if spread:
        detail += f", {spread['count']} seeds"
    train_images = record.get("train_images")
    if train_images is not None and train_images < FULL_TRAIN_IMAGES:
        detail += f", {train_images:,} training images"
    if record.get("date"):
        detail += f", {record['date']}"
    return accuracy_text(record), detail


def format_zoo(entries: list[ZooEntry]) -> str:
    from cnnzoo.utils.format import format_table

    header = ("name", "dataset", "input", "params", "mult-adds", "test acc", "measured on",
              "weights")
    rows = [
        (e.name, e.dataset or "-", e.input, f"{e.params:,}", f"{e.macs:,}", *measured_text(e),
         weights_text(e))
        for e in entries
    ]
    return format_table(header, rows, {"params", "mult-adds", "test acc"})


def zoo_json(entries: list[ZooEntry]) -> list[dict[str, Any]]:
    return [
        {"name": e.name, "path": str(e.path), "dataset": e.dataset, "input": e.input,
         "params": e.params, "macs": e.macs, "test_accuracy": e.accuracy,
         "seed_statistics": None if e.stale else seed_spread(e.measured),
         "measured": e.measured, "stale": e.stale, "pretrained": pretrained_record(e)}
        for e in entries
    ]


def pretrained_record(entry: ZooEntry) -> dict[str, Any] | None:
    """The shipped weights' record (file, sha256, test_accuracy, seed, ...), or None."""
    return (entry.measured or {}).get("pretrained")


def weights_text(entry: ZooEntry) -> str:
    """The weights column: '-' without weights; 'seed 0' where the record has several
    seeds (the weights are one of them); 'yes' otherwise."""
    pretrained = pretrained_record(entry)
    if not pretrained:
        return "-"
    seed = pretrained.get("seed")
    if seed_spread(entry.measured) is not None and isinstance(seed, int):
        return f"seed {seed}"
    return "yes"
