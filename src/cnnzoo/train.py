"""Training and evaluation: `fit` runs an experiment into a run directory.

The loop is deliberately plain PyTorch (forward, loss, backward, step) over
batches sliced from tensors on the device. Around it: a learning-rate schedule
that is a pure function of the step, randomness seeded by position, a checkpoint
at every epoch end and on SIGINT/SIGTERM, and a NaN check every step, so that a
run can be interrupted and resumed with bitwise the same result.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import runs
from cnnzoo.budget import StepBudget
from cnnzoo.build import Network, build_model
from cnnzoo.callbacks import Callback, RunContext, default_callbacks
from cnnzoo.checkpoint import (
    check_compatible,
    load_into,
    load_state,
    load_weights,
    save_state,
    save_weights,
)
from cnnzoo.config import ExperimentConfig, SchedulerConfig, TrainConfig, load_config, to_plain
from cnnzoo.cpu import choose_precision, keep_freed_memory
from cnnzoo.data.pipeline import BatchTransform, Dataset, load_dataset, step_seed
from cnnzoo.distributed import JOB_KEY, Distributed
from cnnzoo.divergence import DivergenceGuard
from cnnzoo.errors import CheckpointError, CnnzooError, ConfigError
from cnnzoo.finetune import initialise_from
from cnnzoo.losses import create_loss
from cnnzoo.plan import Plan, last_weighted_layer, plan_experiment
from cnnzoo.runlock import lock_run, releases_run_locks
from cnnzoo.summary import format_summary


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, run_dir: Path, epoch: int, step: int,
                 processes: int = 1, data_root: str | None = None) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        how = shlex.join(["cnnzoo", "train", "--resume", str(run_dir)])
        if data_root is not None:  # not stored in the run: the data may have moved
            how += f" --data-root {shlex.quote(data_root)}"
        if processes > 1:
            how = (f"{how} --nproc {processes} (or your torchrun command with "
                   f"train --resume {shlex.quote(str(run_dir))})")
        super().__init__(
            f"{name}: stopped at epoch {epoch + 1}, step {step}; checkpoint written to "
            f"{run_dir}. Resume with: {how}"
        )


class Diverged(CnnzooError):
    """The loss became NaN or infinite."""


# ---- devices and precision


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnzooError(f"device {requested} requested but CUDA is not available; use cpu")
    if device.type == "cuda" and device.index is not None and (
        device.index >= torch.cuda.device_count()
    ):
        raise CnnzooError(
            f"device {requested} requested but there are {torch.cuda.device_count()} GPUs"
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise CnnzooError(f"device {requested} requested but MPS is not available; use cpu")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    return choose_precision(requested, device).name


def resolve_channels_last(setting: bool | str, plan: Plan, device: torch.device) -> bool:
    """`auto`: NHWC for networks with convolutions on the CPU and CUDA, where the
    convolution kernels (oneDNN, cuDNN tensor cores) are faster in that layout; on
    this project's 2-core CPU it trains LeNet-5 1.7x faster."""
    if setting != "auto":
        return bool(setting)
    has_conv = any(layer.type_name == "conv" for layer in plan.walk())
    return has_conv and device.type in ("cpu", "cuda")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---- optimizer and schedule


def create_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer, with PyTorch's fused kernels where they exist (CPU and CUDA): one
    kernel per step instead of a few per parameter, the same arithmetic."""
    opt = train.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay, fused=fused)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(params, lr=opt.lr, betas=(opt.momentum, opt.beta2),
               weight_decay=opt.weight_decay, fused=fused)


def lr_factor(step: int, total: int, steps_per_epoch: int, lr: float,
              sched: SchedulerConfig) -> float:
    """The learning rate at `step` (0-based) as a fraction of the peak."""
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


# ---- evaluation


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    samples: int
    confusion: torch.Tensor  # (true, predicted) counts

    def per_class(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()


def predict_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    logits = model(x)
    if tta == "flip":
        logits = (logits + model(x.flip(3))) / 2
    return logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    transform: BatchTransform,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    tta: str = "none",
    dist: Distributed | None = None,
) -> Evaluation:
    """Loss (plain cross-entropy), accuracy and confusion matrix over `batches`."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        with autocast(device, precision):
            logits = predict_logits(model, transform.normalize(images), tta)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        pred = logits.argmax(1)
        confusion += torch.bincount(labels * num_classes + pred, minlength=num_classes**2)
    if dist is not None:
        loss_sum, confusion = dist.all_sum(loss_sum), dist.all_sum(confusion)
    model.train(was_training)
    confusion = confusion.view(num_classes, num_classes).cpu()
    samples = int(confusion.sum())
    return Evaluation(
        loss=float(loss_sum) / max(1, samples),
        accuracy=float(confusion.diag().sum()) / max(1, samples),
        samples=samples,
        confusion=confusion,
    )


# ---- progress


class Progress:
    """A tqdm bar per epoch on a terminal; plain lines otherwise. Rank 0 only."""

    def __init__(self, enabled: bool, total_epochs: int) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.total_epochs = total_epochs
        self.bar = None

    def start_epoch(self, epoch: int, steps: int, done: int) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=done, unit="step", leave=False,
                            desc=f"epoch {epoch + 1}/{self.total_epochs}",
                            dynamic_ncols=True, file=sys.stderr)

    def update(self, loss: float, accuracy: Callable[[], float], images_per_s: float) -> None:
        """One step done; `accuracy` is only called (it may wait for the GPU) when the
        bar shows it, every tenth step."""
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 10 == 0 or self.bar.n == self.bar.total:
                self.bar.set_postfix_str(
                    f"loss {loss:.4f} acc {accuracy():.1%} {images_per_s:,.0f} img/s",
                    refresh=False,
                )

    def end_epoch(self, line: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.line(line)

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)


class StepLosses:
    """Every step's loss as a number, for the NaN check, the step log and the bar.

    Reading a number from the GPU waits until all the work queued before it is done,
    which leaves the GPU idle while Python queues the next step. So on CUDA the loss
    is copied to pinned host memory without waiting and read one step later, when it
    has arrived: training still stops within one step of a NaN (the checkpoint
    refuses the NaN weights of that extra step). Elsewhere it is read at once,
    before the optimizer step.
    """

    def __init__(self, device: torch.device, on_value: Callable[[float, Any], None],
                 lag: int | None = None) -> None:
        self.cuda = device.type == "cuda"
        self.lag = (1 if self.cuda else 0) if lag is None else lag
        self.on_value = on_value
        self.pending: deque[tuple[torch.Tensor, Any, Any]] = deque()

    def add(self, loss: torch.Tensor, info: Any) -> None:
        loss = loss.detach()
        if not self.lag:
            self.on_value(float(loss), info)
            return
        event = None
        if self.cuda:
            host = torch.empty((), dtype=loss.dtype, pin_memory=True)
            host.copy_(loss, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = loss.clone()
        self.pending.append((host, event, info))
        while len(self.pending) > self.lag:
            self._read_oldest()

    def flush(self) -> None:
        while self.pending:
            self._read_oldest()

    def _read_oldest(self) -> None:
        host, event, info = self.pending.popleft()
        if event is not None:
            event.synchronize()
        self.on_value(float(host), info)


# ---- the run


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
    planned_steps: int | None = None  # fixed by train.time_budget once the first steps are timed

    def state(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EpochTally:
    """What the steps of one epoch add up to: the loss and images seen (in the
    position, so that a checkpoint holds them), the correct predictions (on the
    device, read at the end), the step log and the bar."""

    def __init__(self, position: Position, epoch: int, device: torch.device,
                 progress: Progress, world: int, divergence_hint: str) -> None:
        self.position = position
        self.epoch = epoch
        self.progress = progress
        self.world = world
        self.hint = divergence_hint
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.rows: list[dict[str, Any]] = []
        self.tick = time.perf_counter()

    def add_loss(self, value: float, info: tuple[int, int, int, float]) -> None:
        """The loss of one step: global step, batch within the epoch, images, lr."""
        step, batch, n, lr = info
        if not math.isfinite(value):
            raise Diverged(f"the loss became {value} at epoch {self.epoch + 1}, step {batch} "
                           f"(global step {step}) with lr {lr:.3g}; {self.hint}")
        pos = self.position
        pos.loss_sum += value * n
        pos.seen += n
        self.rows.append({"step": step, "epoch": self.epoch + 1, "batch": batch,
                          "loss": f"{value:.6f}", "lr": f"{lr:.6g}"})
        if self.progress.tty:  # rank 0 alone: its own share stands for the batch
            elapsed = pos.seconds + time.perf_counter() - self.tick
            self.progress.update(value, self.accuracy, pos.seen / max(elapsed, 1e-9))

    def accuracy(self) -> float:
        pos = self.position
        return float(pos.correct + int(self.correct) * self.world) / max(1, pos.seen)


@dataclass
class TrainResult:
    run_dir: Path
    results: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


RESUME_MAY_CHANGE = {"train.device", "train.compile", "train.eval_batch_size", "data.workers",
                     "data.root", "data.download", "versions"}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: data}


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


@releases_run_locks
def fit(
    config: ExperimentConfig,
    *,
    out: Path | None = None,
    data_root: str | None = None,
    device: str | None = None,
    resume: Path | None = None,
    show_progress: bool = True,
    stop_after_steps: int | None = None,
    callbacks: list[Callback] | None = None,
    init_from: str | None = None,
) -> TrainResult:
    """Train `config` into a run directory (or continue the run in `resume`).

    `stop_after_steps` stops (as if interrupted) once that global step is reached;
    tests use it to interrupt at an exact step. `init_from` names trained weights to
    start from (cnnzoo.finetune).
    """
    started = time.perf_counter()
    keep_freed_memory()
    dist = Distributed.from_environment()
    restarted_before_checkpoint = False
    if resume is None and out is not None and dist.continues(out):
        # torchrun restarted us after a failure: continue the same run from its last
        # checkpoint, or start it over if it failed before writing one.
        if (out / runs.STATE).exists():
            resume = out
        else:
            restarted_before_checkpoint = True
    if resume is not None:
        if dist.is_main:  # rank 0 holds the run; a torchrun restart takes it over
            lock_run(resume, "resume")
        run = runs.open_run(resume)
        if not (resume / runs.STATE).exists():
            raise CheckpointError(f"{resume} has no {runs.STATE} to resume from")
        changed = config_differences(run.config, config)
        if changed:
            raise ConfigError(
                f"cannot resume {resume} with a different config: {', '.join(changed)}",
                fix="resume with the run's own config, or start a new run",
            )
        out = resume
        config = replace(config, versions=run.config.versions)
    elif out is not None and not restarted_before_checkpoint:
        runs.check_new_run_dir(out)
    train_cfg = config.train
    if device is not None:
        train_cfg = replace(train_cfg, device=device)
        config = replace(config, train=train_cfg)
    torch_device = dist.device(resolve_device(train_cfg.device))
    precision_choice = choose_precision(train_cfg.precision, torch_device)
    precision = precision_choice.name
    dist.check_sync_batchnorm(config, torch_device)
    dist.connect(torch_device)
    if config.data.dataset is None:
        raise ConfigError("the experiment has no data.dataset to train on",
                          where="data", path=("data",),
                          fix="add 'data: {dataset: fashion_mnist}' (or --set data.dataset=...)")

    plan = plan_experiment(config)
    torch.manual_seed(train_cfg.seed)
    model = build_model(plan)
    initialise_from(model, None if resume is not None else init_from, dist.is_main)
    with dist.local_main_first():
        data = load_dataset(config.data, plan.input, plan.output.depth, seed=train_cfg.seed,
                            data_root=data_root)
    num_classes = len(data.classes)
    if plan.output.depth != num_classes:
        last = last_weighted_layer(plan)
        raise ConfigError(
            f"the last layer gives {plan.output.depth} outputs but the dataset has "
            f"{num_classes} classes ({', '.join(data.classes[:6])}"
            f"{', ...' if num_classes > 6 else ''})",
            where=last.where.label, path=last.where.path,
            fix=f"make the last layer produce {num_classes} units",
        )
    if train_cfg.batch_size % dist.world:
        raise ConfigError(
            f"batch_size {train_cfg.batch_size} is not divisible by the {dist.world} processes",
            where="train", path=("train", "batch_size"),
        )
    if dist.active and len(data.train) < train_cfg.batch_size:
        # One short batch would not split evenly, and the processes' gradients would be
        # weighted wrongly.
        raise ConfigError(
            f"batch_size {train_cfg.batch_size} is larger than the {len(data.train)} training "
            f"images, which cannot be split evenly over {dist.world} processes",
            where="train", path=("train", "batch_size"),
            fix=f"use a batch_size of at most {len(data.train) // dist.world * dist.world}",
        )

    if out is None:
        out = dist.broadcast_path(runs.default_run_dir(config.name, claim=dist.is_main))
    if resume is None:
        if dist.is_main:
            runs.claim_run_dir(out, restarted=restarted_before_checkpoint)
            config = replace(config, versions=tuple(runs.versions().items()))
            from cnnzoo.files import atomic_write_text

            atomic_write_text(out / runs.CONFIG, config.to_yaml())
            atomic_write_text(out / runs.SUMMARY, format_summary(plan) + "\n")
            runs.write_json(out / runs.RUN, {
                "name": config.name,
                "dataset": data.name,
                "classes": list(data.classes),
                "mean": list(data.mean),
                "std": list(data.std),
                "input": plan.input.as_list(),
                "train_samples": len(data.train),
                "val_samples": len(data.val) if data.val is not None else 0,
                "test_samples": len(data.test),
                "source": data.source,
                "command": runs.command_line(),
                JOB_KEY: dist.job,
            })
        dist.barrier()
    else:
        stored = runs.open_run(out).classes
        if list(stored) != list(data.classes):
            raise CheckpointError(
                f"the dataset's classes differ from the run's: the run has {stored}, the data "
                f"{list(data.classes)}"
            )

    model.to(torch_device)
    channels_last = resolve_channels_last(train_cfg.channels_last, plan, torch_device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model = dist.prepare(model, train_cfg.sync_batchnorm)
    optimizer = create_optimizer(model, train_cfg)
    steps_per_epoch = data.train.steps_per_epoch(train_cfg.batch_size)
    budget = StepBudget(train_cfg.time_budget, steps_per_epoch * train_cfg.epochs)
    peak = train_cfg.optimizer.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(min(step, budget.total - 1), budget.total, steps_per_epoch, peak,
                               train_cfg.scheduler),
    )
    position = Position()
    metrics_log = runs.CsvLog(out / runs.METRICS, runs.METRIC_FIELDS)
    steps_log = runs.CsvLog(out / runs.STEPS, runs.STEP_FIELDS)
    if restarted_before_checkpoint and dist.is_main:
        metrics_log.truncate(0)
        steps_log.truncate(0)
    if resume is not None:
        position = _restore(out, model, optimizer, scheduler, metrics_log, steps_log,
                            torch_device, dist)
        budget.restore(position.planned_steps)

    train_model = dist.wrap(model)
    if train_cfg.compile:
        train_model = torch.compile(train_model)
    transform = BatchTransform(data.mean, data.std, config.data.augment, config.data.normalize,
                               torch_device, channels_last)
    train_split = data.train.to(torch_device) if hasattr(data.train, "to") else data.train
    val_split = (data.val.to(torch_device) if data.val is not None and hasattr(data.val, "to")
                 else data.val)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    loss_fn = create_loss(train_cfg.loss).fn
    progress = Progress(show_progress and dist.is_main, train_cfg.epochs)
    if dist.is_main:
        progress.line(
            f"training {config.name} on {data.name} ({len(data.train):,} train, "
            f"{len(data.val) if data.val is not None else 0:,} val, {len(data.test):,} test) "
            f"on {_device_name(torch_device)}"
            f"{f' x {dist.world} processes' if dist.active else ''}, {precision} "
            f"({precision_choice.reason}); "
            f"{plan.total_params:,} params; run: {out}"
        )
        if precision_choice.warning:
            print(precision_choice.warning, file=sys.stderr, flush=True)
        if resume is not None and position.epoch < train_cfg.epochs:
            progress.line(f"resuming at epoch {position.epoch + 1}, step {position.batch}")

    def checkpoint(pos: Position) -> None:
        # A finite loss can still come with an update that overflows the weights: those
        # must not replace the last good checkpoint.
        bad = _non_finite(model)
        if bad is not None:
            raise Diverged(
                f"the weights became NaN or infinite ({bad}) by global step {pos.step}; the "
                f"learning rate is likely too high (train.optimizer.lr: {peak:g}). "
                f"{_kept(out)}"
            )
        if dist.is_main:
            digest = save_weights(model, out / runs.WEIGHTS, {"name": config.name})
            save_state(_state(pos, model, optimizer, scheduler, metrics_log, steps_log, digest),
                       out / runs.STATE)
        dist.barrier()

    callbacks = default_callbacks() if callbacks is None else callbacks
    context = RunContext(out, config, plan, data.classes)
    stopper = _SignalStop()
    history: list[dict[str, Any]] = []
    guard = DivergenceGuard(train_cfg.divergence, num_classes)
    with stopper:
        model.train()
        while position.epoch < train_cfg.epochs and position.step < budget.total:
            epoch = position.epoch
            progress.start_epoch(epoch, steps_per_epoch, position.batch)
            tally = EpochTally(position, epoch, torch_device, progress, dist.world,
                               f"the learning rate is likely too high (train.optimizer.lr: "
                               f"{peak:g}) or the data is not normalised. {_kept(out)}")
            losses = StepLosses(torch_device, guard.watch(tally, Diverged))
            batches = train_split.train_batches(
                train_cfg.batch_size, seed=train_cfg.seed, epoch=epoch,
                start_step=position.batch, rank=dist.rank, world=dist.world,
            )
            for images, labels in batches:
                if position.step >= budget.total:
                    break
                images = images.to(torch_device, non_blocking=True)
                labels = labels.to(torch_device, non_blocking=True)
                x = transform.train(images, step_seed(train_cfg.seed, epoch, position.batch))
                lr = optimizer.param_groups[0]["lr"]
                with autocast(torch_device, precision):
                    logits = train_model(x, labels)
                    loss = loss_fn(logits.float(), labels) + model.auxiliary_loss(x)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                position.batch += 1
                position.step += 1
                losses.add(dist.mean(loss.detach()),
                           (position.step, position.batch, len(labels) * dist.world, lr))
                if scaler is None:
                    optimizer.step()
                if budget.after_step(position.step, position.train_seconds + position.seconds
                                     + time.perf_counter() - tally.tick):
                    planned = torch.tensor(budget.total, device=torch_device)
                    budget.total = dist.sum_int(planned) // dist.world  # one plan for all
                    position.planned_steps = budget.total
                    progress.total_epochs = math.ceil(budget.total / steps_per_epoch)
                    progress.line(budget.describe(steps_per_epoch))
                scheduler.step()
                tally.correct += (logits.argmax(1) == labels).sum()
                signum = dist.agree_stop(stopper.signum)
                if stop_after_steps is not None and position.step >= stop_after_steps:
                    signum = signum or signal.SIGINT
                if signum:
                    losses.flush()
                    position.correct += dist.sum_int(tally.correct)
                    position.seconds += time.perf_counter() - tally.tick
                    if dist.is_main:
                        steps_log.append(tally.rows)
                    progress.end_epoch(f"interrupted at epoch {epoch + 1}, step {position.batch}")
                    checkpoint(position)
                    raise Interrupted(signum, out, epoch, position.batch, dist.world,
                                      data_root)
            losses.flush()
            position.correct += dist.sum_int(tally.correct)
            position.seconds += time.perf_counter() - tally.tick
            if dist.is_main:
                steps_log.append(tally.rows)
            row = _epoch_rows(epoch, position, optimizer, scheduler)
            if val_split is not None:
                ev_tick = time.perf_counter()
                val = evaluate(model, val_split.eval_batches(train_cfg.eval_batch_size,
                                                             dist.rank, dist.world),
                               transform, num_classes, torch_device, precision, train_cfg.tta,
                               dist)
                seconds = time.perf_counter() - ev_tick
                row.append({"epoch": epoch + 1, "split": "val", "loss": f"{val.loss:.6f}",
                            "accuracy": f"{val.accuracy:.6f}", "lr": "",
                            "seconds": f"{seconds:.3f}",
                            "images_per_s": f"{val.samples / max(seconds, 1e-9):.1f}"})
            history.extend(row)
            if dist.is_main:
                metrics_log.append(row)
                for callback in callbacks:
                    callback.on_epoch_end(context, epoch, row, model)
            progress.end_epoch(_epoch_line(epoch, progress.total_epochs, row))
            position.train_seconds += position.seconds
            position = Position(epoch=epoch + 1, step=position.step,
                                train_seconds=position.train_seconds,
                                train_images=position.train_images + position.seen,
                                planned_steps=position.planned_steps)
            signum = dist.agree_stop(stopper.signum)
            checkpoint(position)
            if signum:
                raise Interrupted(signum, out, epoch + 1, 0, dist.world, data_root)

    test_tick = time.perf_counter()
    test = evaluate(model, data.test.eval_batches(train_cfg.eval_batch_size, dist.rank,
                                                  dist.world)
                    if not hasattr(data.test, "to")
                    else data.test.to(torch_device).eval_batches(train_cfg.eval_batch_size,
                                                                 dist.rank, dist.world),
                    transform, num_classes, torch_device, precision, train_cfg.tta, dist)
    test_seconds = time.perf_counter() - test_tick
    last_val = next((r for r in reversed(history) if r["split"] == "val"), None)
    results = {
        "name": config.name,
        "dataset": data.name,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "test_samples": test.samples,
        "val_accuracy": float(last_val["accuracy"]) if last_val else None,
        "train_seconds": position.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "epochs": train_cfg.epochs,
        "steps": position.step,
        "epochs_run": round(position.step / steps_per_epoch, 3),
        "time_budget": train_cfg.time_budget,
        "images_per_s": position.train_images / max(position.train_seconds, 1e-9),
        "params": plan.total_params,
        "macs": plan.total_macs,
        "device": _device_name(torch_device),
        "processes": dist.world,
        "precision": precision,
        "precision_reason": precision_choice.reason,
        "channels_last": channels_last,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": runs.command_line(),
    }
    if dist.is_main:
        metrics_log.append([{"epoch": train_cfg.epochs, "split": "test",
                             "loss": f"{test.loss:.6f}", "accuracy": f"{test.accuracy:.6f}",
                             "lr": "", "seconds": f"{test_seconds:.3f}",
                             "images_per_s": f"{test.samples / max(test_seconds, 1e-9):.1f}"}])
        for callback in callbacks:
            callback.on_train_end(context, results, test, model)
        runs.write_json(out / runs.RESULTS, results)
        progress.line(
            f"test accuracy {test.accuracy:.2%}, loss {test.loss:.4f} on {test.samples:,} images; "
            f"trained in {position.train_seconds:.1f}s "
            f"({results['images_per_s']:,.0f} images/s); run: {out}"
        )
    dist.close()
    return TrainResult(out, results, history)


def _epoch_rows(epoch: int, pos: Position, optimizer: torch.optim.Optimizer,
                scheduler: Any) -> list[dict[str, Any]]:
    return [{
        "epoch": epoch + 1, "split": "train",
        "loss": f"{pos.loss_sum / max(1, pos.seen):.6f}",
        "accuracy": f"{pos.correct / max(1, pos.seen):.6f}",
        "lr": f"{optimizer.param_groups[0]['lr']:.6g}",
        "seconds": f"{pos.seconds:.3f}",
        "images_per_s": f"{pos.seen / max(pos.seconds, 1e-9):.1f}",
    }]


def _epoch_line(epoch: int, epochs: int, rows: list[dict[str, Any]]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for row in rows:
        parts.append(f"{row['split']} loss {float(row['loss']):.4f} "
                     f"acc {float(row['accuracy']):.2%}")
    train = rows[0]
    parts.append(f"lr {float(train['lr']):.3g}")
    parts.append(f"{float(train['seconds']):.1f}s")
    parts.append(f"{float(train['images_per_s']):,.0f} img/s")
    return "  ".join(parts)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return str(device)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _non_finite(model: nn.Module) -> str | None:
    """The name of the first floating-point tensor of `model` holding NaN or inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _kept(out: Path) -> str:
    if (out / runs.STATE).exists():
        return f"The last good checkpoint in {out} was kept"
    return f"No checkpoint had been written to {out} yet"


def _state(pos: Position, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
           metrics: runs.CsvLog, steps: runs.CsvLog, digest: str) -> dict[str, Any]:
    return {
        "step": pos.step,
        "position": pos.state(),
        # The state's own copy of the weights: a crash between writing model.safetensors
        # and state.pt leaves the two one checkpoint apart, and this copy is the one that
        # goes with the optimizer, RNG and position.
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "metrics_rows": metrics.rows,
        "steps_rows": steps.rows,
        "weights_sha256": digest,
    }


def _restore(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             metrics: runs.CsvLog, steps: runs.CsvLog, device: torch.device,
             dist: Distributed) -> Position:
    state = load_state(out / runs.STATE)
    tensors, _ = load_weights(out / runs.WEIGHTS)  # verified, even though the state's are used
    check_compatible(model, tensors, out / runs.WEIGHTS)
    saved = state.get("model")
    if not isinstance(saved, dict):
        raise CheckpointError(f"corrupt checkpoint {out / runs.STATE}: it holds no weights")
    check_compatible(model, saved, out / runs.STATE)
    model.load_state_dict(saved)
    model.to(device)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        position = Position(**state["position"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {out / runs.STATE}: {exc}") from None
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if dist.is_main:
        metrics.truncate(state["metrics_rows"])
        steps.truncate(state["steps_rows"])
    dist.barrier()
    return position


class _SignalStop:
    """SIGINT and SIGTERM set a flag the loop checks at every step boundary; a second
    Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum = 0
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after this step "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> _SignalStop:
        if os.getpid() and _is_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---- using a trained run


def load_run_model(run: runs.Run, device: torch.device) -> Network:
    """The run's network with its trained weights, verified."""
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


def evaluate_run(
    run_dir: Path, split: str = "test", data_root: str | None = None, device: str = "auto",
    config_override: ExperimentConfig | None = None,
) -> tuple[Evaluation, list[str]]:
    """Evaluate a run's weights on a split of its dataset."""
    run = runs.open_run(run_dir)
    config = config_override or run.config
    torch_device = resolve_device(device if device != "auto" else "auto")
    plan = plan_experiment(config)
    runs.check_fits_network(run, plan.output.depth, plan.input.as_list())
    model = build_model(plan)
    weights = run.path / runs.WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{run.path} has no {runs.WEIGHTS} yet")
    load_into(model, weights)
    model.to(torch_device).eval()
    if resolve_channels_last(config.train.channels_last, plan, torch_device):
        model.to(memory_format=torch.channels_last)
    splits = ("test",) if split == "test" else ("train", "val")
    data = load_dataset(config.data, plan.input, plan.output.depth, seed=config.train.seed,
                        data_root=data_root, splits=splits)
    if list(data.classes) != run.classes:
        raise CheckpointError(
            f"the dataset's classes {list(data.classes)} differ from those the run was trained "
            f"on {run.classes}"
        )
    chosen: Dataset | Any = {"test": data.test, "val": data.val, "train": data.train}[split]
    if chosen is None:
        raise CnnzooError(f"the run has no {split} split (data.val_split is 0)")
    if hasattr(chosen, "to"):
        chosen = chosen.to(torch_device)
    transform = run_transform(run, torch_device)
    precision = resolve_precision(config.train.precision, torch_device)
    result = evaluate(model, chosen.eval_batches(config.train.eval_batch_size), transform,
                      len(run.classes), torch_device, precision, config.train.tta)
    return result, run.classes


def load_config_for_resume(run_dir: Path, overrides: list[str]) -> ExperimentConfig:
    run = runs.open_run(run_dir)
    return load_config(run_dir / runs.CONFIG, overrides) if overrides else run.config

