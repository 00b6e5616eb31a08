"""The optimizer, and the learning rate as a pure function of the step (so that a
resumed run continues the schedule exactly)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cnnzoo.config.experiment import SchedulerConfig, TrainConfig
from cnnzoo.training.muon import Muon, split_parameters


def create_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer, with PyTorch's fused kernels where they exist (CPU and CUDA): one
    kernel per step instead of a few per parameter, the same arithmetic."""
    opt = train.optimizer
    if opt.name == "muon":
        return create_muon(model, train)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay, fused=fused)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(params, lr=opt.lr, betas=(opt.momentum, opt.beta2),
               weight_decay=opt.weight_decay, fused=fused)


def create_muon(model: nn.Module, train: TrainConfig) -> Muon:
    """Muon for the conv and fc weight matrices, the fallback for the rest. The Muon
    group comes first: the trainer logs the first group's learning rate."""
    opt = train.optimizer
    matrices, rest = split_parameters(model)
    shared = {"weight_decay": opt.weight_decay, "nesterov": opt.nesterov}
    fallback = {**shared, "kind": opt.fallback,
                "lr": opt.lr if opt.fallback_lr is None else opt.fallback_lr,
                "momentum": opt.momentum if opt.fallback_momentum is None
                else opt.fallback_momentum,
                "beta2": opt.beta2}
    groups = [{**shared, "params": matrices, "kind": "muon", "lr": opt.lr,
               "momentum": opt.momentum}, {**fallback, "params": rest}]
    return Muon(g for g in groups if g["params"])


def create_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig,
                     steps_per_epoch: int,
                     timeline: Callable[[int], float] | None = None
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    """`train.scheduler` over `train.epochs` epochs of `steps_per_epoch` steps; with a
    `timeline` (a time budget's), step t takes the schedule's value at `timeline(t)`,
    read at every step: a re-plan compresses or stretches the schedule's rest."""
    length = steps_per_epoch * train.epochs
    place = timeline or (lambda step: step)
    peak = train.optimizer.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(min(place(step), length - 1), length, steps_per_epoch, peak,
                               train.scheduler),
    )


def lr_factor(step: float, total: int, steps_per_epoch: int, lr: float,
              sched: SchedulerConfig) -> float:
    """The learning rate at `step` (0-based; a re-planned run's steps fall between whole
    ones) as a fraction of the peak."""
    if sched.name == "onecycle":
        # torch.optim.lr_scheduler.OneCycleLR's defaults: from lr/25 up to lr, then a
        # cosine down to lr/25/1e4.
        up = max(1, round(sched.pct_start * total))
        if step < up:
            return _cosine(1 / 25, 1.0, step / up)
        return _cosine(1.0, 1 / 25 / 1e4, (step - up) / max(1, total - up))
    warmup = round(sched.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if sched.name == "cosine":
        floor = sched.min_lr / lr if lr > 0 else 0.0
        return _cosine(1.0, floor, progress)
    if sched.name == "step":
        return sched.gamma ** ((step // steps_per_epoch) // sched.step_epochs)
    return 1.0


def _cosine(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
