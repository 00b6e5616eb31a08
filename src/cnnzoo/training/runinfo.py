"""What a run checks and records about itself outside the loop: that the data and the
batch fit the network before anything is written, run.json's record of the run, and
the line that starts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnzoo.config.experiment import ExperimentConfig
from cnnzoo.data.pipeline import Dataset
from cnnzoo.errors import ConfigError
from cnnzoo.model.cpu import PrecisionChoice
from cnnzoo.model.devices import device_name
from cnnzoo.model.plan import Plan, last_weighted_layer
from cnnzoo.runs import rundir
from cnnzoo.training.distributed import JOB_KEY, Distributed


def check_fits(plan: Plan, data: Dataset, batch_size: int, dist: Distributed) -> None:
    """The network's outputs match the classes; the batch splits over the processes."""
    classes = len(data.classes)
    if plan.output.depth != classes:
        last = last_weighted_layer(plan)
        raise ConfigError(
            f"the last layer gives {plan.output.depth} outputs but the dataset has "
            f"{classes} classes ({', '.join(data.classes[:6])}{', ...' if classes > 6 else ''})",
            where=last.where.label, path=last.where.path,
            fix=f"make the last layer produce {classes} units")
    if batch_size % dist.world:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {dist.world} processes",
            where="train", path=("train", "batch_size"))
    if dist.active and len(data.train) < batch_size:
        # One short batch would not split evenly, and the processes' gradients would be
        # weighted wrongly.
        raise ConfigError(
            f"batch_size {batch_size} is larger than the {len(data.train)} training "
            f"images, which cannot be split evenly over {dist.world} processes",
            where="train", path=("train", "batch_size"),
            fix=f"use a batch_size of at most {len(data.train) // dist.world * dist.world}")


def run_info(config: ExperimentConfig, plan: Plan, data: Dataset, precision: str,
             dist: Distributed) -> dict[str, Any]:
    """run.json: what a new run trains on, written before its first step."""
    return {
        "name": config.name, "dataset": data.name, "classes": list(data.classes),
        "mean": list(data.mean), "std": list(data.std),
        "input": plan.input.as_list(), "train_samples": len(data.train),
        "val_samples": len(data.val) if data.val is not None else 0,
        "test_samples": len(data.test), "source": data.source,
        "precision": precision,  # what auto chose here: eval repeats it
        "command": rundir.command_line(), JOB_KEY: dist.job,
    }


def start_line(config: ExperimentConfig, plan: Plan, data: Dataset, device: torch.device,
               precision: PrecisionChoice, dist: Distributed, out: Path) -> str:
    """`training NAME on DATA (... train, ... val, ... test) on DEVICE, PRECISION (why);
    N params; run: DIR`."""
    return (
        f"training {config.name} on {data.name} ({len(data.train):,} train, "
        f"{len(data.val) if data.val is not None else 0:,} val, {len(data.test):,} test) "
        f"on {device_name(device)}"
        f"{f' x {dist.world} processes' if dist.active else ''}, {precision.name} "
        f"({precision.reason}); {plan.total_params:,} params; run: {out}")
