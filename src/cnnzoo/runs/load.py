"""A trained run read back from its directory: its network with the trained weights,
and its preprocessing. `cnnzoo eval`, `predict`, `viz` and `export` start here."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.data.augment import BatchTransform
from cnnzoo.errors import CheckpointError
from cnnzoo.model.build import Network, build_network
from cnnzoo.model.devices import resolve_channels_last, resolve_precision
from cnnzoo.model.plan import plan_experiment
from cnnzoo.runs import rundir
from cnnzoo.runs.checkpoint import load_into


def load_run_model(run: rundir.Run, device: torch.device) -> Network:
    """The run's network with its trained weights, verified, in the memory layout it was
    trained in, in eval mode (with a warning when the run is still training)."""
    rundir.warn_if_training(run)
    plan = plan_experiment(run.config)
    rundir.check_fits_network(run, plan.output.depth, plan.input.as_list())
    model = build_network(plan)
    weights = run.path / rundir.WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{run.path} has no {rundir.WEIGHTS}: training never finished "
                              "an epoch")
    load_into(model, weights)
    model.to(device).eval()
    if resolve_channels_last(run.config.train.channels_last, plan, device):
        model.to(memory_format=torch.channels_last)
    return model


def run_transform(run: rundir.Run, device: torch.device) -> BatchTransform:
    """The run's preprocessing, in the memory layout its network was trained in (the same
    layout gives the same arithmetic, so eval repeats training's test numbers)."""
    plan = plan_experiment(run.config)
    channels_last = resolve_channels_last(run.config.train.channels_last, plan, device)
    return BatchTransform(tuple(run.info["mean"]), tuple(run.info["std"]),
                          run.config.data.augment, run.config.data.normalize, device,
                          channels_last)


def trained_precision(run: rundir.Run, device: torch.device) -> str:
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
    run = rundir.open_run(run_dir)
    return load_config(run_dir / rundir.CONFIG, overrides) if overrides else run.config

