"""Where training is, and the checkpoint that holds it.

`Position` is the next step to run and what the current epoch has added up so far.
`Checkpoints` writes the weights (model.safetensors) and everything a resume needs
(state.pt: position, optimizer, schedule, RNG, log lengths) at every epoch end and
when training stops on a signal; `restore` reads them back so that a resumed run
computes bitwise what an uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.config.experiment import ExperimentConfig, to_plain
from cnnzoo.errors import CheckpointError, ConfigError
from cnnzoo.runs import rundir
from cnnzoo.runs.checkpoint import load_state, load_weights, save_state, save_weights
from cnnzoo.runs.fit import check_fit
from cnnzoo.training.distributed import Distributed
from cnnzoo.training.ema import WeightAverage
from cnnzoo.training.lookahead import Lookahead
from cnnzoo.training.stopping import Diverged


@dataclass
class Position:
    """Where training is: the next step to run, and what the current epoch has seen."""

    epoch: int = 0
    batch: int = 0  # next batch within the epoch
    step: int = 0  # global step
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # training time of the current epoch so far
    train_seconds: float = 0.0  # all epochs
    train_images: int = 0  # images trained in all finished epochs, short last batches as short
    planned_steps: int | None = None  # train.time_budget's plan: the steps the run takes
    replans: list[list[int]] = field(default_factory=list)  # [step, new total], each re-plan
    loop_seconds: float = 0.0  # the training loop's time (train.time_budget's clock)

    def state(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Checkpoints:
    """The checkpoint of one run directory, for one model, optimizer and schedule."""

    def __init__(self, out: Path, name: str, model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, metrics: rundir.CsvLog,
                 steps: rundir.CsvLog, dist: Distributed, peak_lr: float,
                 average: WeightAverage | None = None,
                 lookahead: Lookahead | None = None) -> None:
        self.out = out
        self.average = average  # train.ema: saved as the weights, and kept for a resume
        self.lookahead = lookahead  # train.lookahead: its slow weights, kept for a resume
        self.name = name
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.metrics = metrics
        self.steps = steps
        self.dist = dist
        self.peak_lr = peak_lr

    def save(self, position: Position) -> None:
        """Write the checkpoint (rank 0), after checking the weights are finite: a
        finite loss can still come with an update that overflows the weights, and those
        must not replace the last good checkpoint."""
        bad = non_finite(self.model)
        if bad is not None:
            raise Diverged(
                f"the weights became NaN or infinite ({bad}) by global step {position.step}; "
                f"the learning rate is likely too high (train.optimizer.lr: "
                f"{self.peak_lr:g}). {self.kept()}"
            )
        if self.dist.is_main:
            saved = self.average.module if self.average is not None else self.model
            digest = save_weights(saved, self.out / rundir.WEIGHTS, {"name": self.name})
            save_state(self._state(position, digest), self.out / rundir.STATE)
        self.dist.barrier()

    def _state(self, pos: Position, digest: str) -> dict[str, Any]:
        extra = {} if self.average is None else {"ema": self.average.state_dict()}
        if self.lookahead is not None:
            extra["lookahead"] = self.lookahead.state_dict()
        return {
            **extra,
            "step": pos.step,
            "position": pos.state(),
            # The state's own copy of the weights: a crash between writing
            # model.safetensors and state.pt leaves the two one checkpoint apart, and this
            # copy is the one that goes with the optimizer, RNG and position.
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "metrics_rows": self.metrics.rows,
            "steps_rows": self.steps.rows,
            "weights_sha256": digest,
        }

    def restore(self, device: torch.device) -> Position:
        """Load the checkpoint into the model, optimizer, schedule, RNG and logs."""
        out, model = self.out, self.model
        state = load_state(out / rundir.STATE)
        tensors, _ = load_weights(out / rundir.WEIGHTS)  # verified, though the state's are used
        check_fit(model, tensors, out / rundir.WEIGHTS)
        saved = state.get("model")
        if not isinstance(saved, dict):
            raise CheckpointError(f"corrupt checkpoint {out / rundir.STATE}: it holds no weights")
        check_fit(model, saved, out / rundir.STATE)
        model.load_state_dict(saved)
        model.to(device)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            position = Position(**state["position"])
            if self.average is not None:
                self.average.load_state_dict(state["ema"])
            if self.lookahead is not None:
                self.lookahead.load_state_dict(state["lookahead"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"corrupt checkpoint {out / rundir.STATE}: {exc}") from None
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if self.dist.is_main:
            self.metrics.truncate(state["metrics_rows"])
            self.steps.truncate(state["steps_rows"])
        self.dist.barrier()
        return position

    def kept(self) -> str:
        """What a divergence leaves behind, for its message."""
        if (self.out / rundir.STATE).exists():
            return f"The last good checkpoint in {self.out} was kept"
        return f"No checkpoint had been written to {self.out} yet"


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def non_finite(model: nn.Module) -> str | None:
    """The name of the first floating-point tensor of `model` holding NaN or inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


RESUME_MAY_CHANGE = {"train.device", "train.compile", "train.eval_batch_size", "data.workers",
                     "data.root", "data.download", "versions"}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: data}


def check_resumable(resume: Path, config: ExperimentConfig) -> ExperimentConfig:
    """`config` to continue the run in `resume` with (the run's library versions kept),
    or stop: the run has no checkpoint, or `config` differs from the run's."""
    run = rundir.open_run(resume)
    if not (resume / rundir.STATE).exists():
        raise CheckpointError(f"{resume} has no {rundir.STATE} to resume from")
    changed = config_differences(run.config, config)
    if changed:
        raise ConfigError(
            f"cannot resume {resume} with a different config: {', '.join(changed)}",
            fix="resume with the run's own config, or start a new run",
        )
    return replace(config, versions=run.config.versions)


def config_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Keys whose values differ, except those a resume may change."""
    a, b = _flatten(to_plain(old)), _flatten(to_plain(new))
    a["model.layers"] = to_plain(old)["model"]["layers"]
    b["model.layers"] = to_plain(new)["model"]["layers"]
    keys = sorted(k for k in a.keys() | b.keys() if not k.startswith("model.layers"))
    keys.append("model.layers")
    changed = []
    for key in keys:
        if any(key == p or key.startswith(p + ".") for p in RESUME_MAY_CHANGE):
            continue
        if a.get(key) != b.get(key):
            changed.append(
                key if key == "model.layers" else f"{key} ({a.get(key)!r} -> {b.get(key)!r})"
            )
    return changed
