"""A trained run read back from its directory: its network with the trained weights,
its preprocessing, and its evaluation on a split. `cnnzoo eval`, `predict` and `viz`
start here."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnzoo import runs
from cnnzoo.build import Network, build_model
from cnnzoo.checkpoint import load_into
from cnnzoo.config import ExperimentConfig, load_config
from cnnzoo.data.augment import BatchTransform
from cnnzoo.data.pipeline import load_dataset
from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.plan import plan_experiment
from cnnzoo.training.devices import resolve_channels_last, resolve_device, resolve_precision
from cnnzoo.training.evaluation import Evaluation, evaluate


def load_run_model(run: runs.Run, device: torch.device) -> Network:
    """The run's network with its trained weights, verified, in the memory layout it was
    trained in, in eval mode."""
    plan = plan_experiment(run.config)
    runs.check_fits_network(run, plan.output.depth, plan.input.as_list())
    model = build_model(plan)
    weights = run.path / runs.WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{run.path} has no {runs.WEIGHTS}: training never finished "
                              "an epoch")
    load_into(model, weights)
    model.to(device).eval()
    if resolve_channels_last(run.config.train.channels_last, plan, device):
        model.to(memory_format=torch.channels_last)
    return model


def run_transform(run: runs.Run, device: torch.device) -> BatchTransform:
    """The run's preprocessing, in the memory layout its network was trained in (the same
    layout gives the same arithmetic, so eval repeats training's test numbers)."""
    plan = plan_experiment(run.config)
    channels_last = resolve_channels_last(run.config.train.channels_last, plan, device)
    return BatchTransform(tuple(run.info["mean"]), tuple(run.info["std"]),
                          run.config.data.augment, run.config.data.normalize, device,
                          channels_last)


def evaluate_run(run_dir: Path, split: str = "test", data_root: str | None = None,
                 device: str = "auto", tta: str | None = None) -> tuple[Evaluation, list[str]]:
    """Evaluate a run's weights on a split of its dataset, with the test-time augmentation
    `tta` (None: the run's own train.tta)."""
    run = runs.open_run(run_dir)
    config = run.config
    torch_device = resolve_device(device)
    model = load_run_model(run, torch_device)
    plan = model.plan
    splits = ("test",) if split == "test" else ("train", "val")
    data = load_dataset(config.data, plan.input, plan.output.depth, seed=config.train.seed,
                        data_root=data_root, splits=splits)
    if list(data.classes) != run.classes:
        raise CheckpointError(
            f"the dataset's classes {list(data.classes)} differ from those the run was trained "
            f"on {run.classes}"
        )
    chosen = {"test": data.test, "val": data.val, "train": data.train}[split]
    if chosen is None:
        raise CnnzooError(f"the run has no {split} split (data.val_split is 0)")
    precision = trained_precision(run, torch_device)
    result = evaluate(model, chosen.to(torch_device).eval_batches(config.train.eval_batch_size),
                      run_transform(run, torch_device), len(run.classes), torch_device,
                      precision, config.train.tta if tta is None else tta)
    return result, run.classes


def trained_precision(run: runs.Run, device: torch.device) -> str:
    """The precision the run was trained and tested in, so that eval repeats its test
    accuracy on any machine (`auto` can choose differently from one CPU to the next);
    the config's own choice for runs that did not record it, or where the device
    cannot compute it (fp16 on a CPU)."""
    recorded = run.info.get("precision") or (run.results or {}).get("precision")
    if recorded in ("fp32", "bf16") or (recorded == "fp16" and device.type == "cuda"):
        return recorded
    return resolve_precision(run.config.train.precision, device)


def load_config_for_resume(run_dir: Path, overrides: list[str]) -> ExperimentConfig:
    """The run's own config, with `--set` overrides (a resume refuses real changes)."""
    run = runs.open_run(run_dir)
    return load_config(run_dir / runs.CONFIG, overrides) if overrides else run.config

