"""`Trainer`: one experiment trained into a run directory, in named phases.

    open_run     resume, restart or start: which run directory, which device
    set_up       plan, data, the model (created here, so loading initial weights is
                 one call), run files, optimizer, schedule, checkpoint restore
    train_epoch  the epoch's batches, each through `TrainStep` (the one place the
                 loss is computed), then `end_epoch`
    validate     the val split, if there is one
    end_epoch    metrics.csv, the epoch line, `Callback.on_epoch_end` with the
                 numbers (`EpochMetrics`), the checkpoint
    test         the test split
    finish       results.json, `Callback.on_train_end`, the last line

`fit` is the short way to run one. The loop is plain PyTorch (forward, loss, backward,
step) over batches sliced from tensors on the device; around it a schedule that is a
pure function of the step, randomness seeded by position, a checkpoint at every epoch
end and on SIGINT/SIGTERM, and a NaN check every step, so that a run can be
interrupted and resumed with bitwise the same result.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnzoo.config.experiment import ExperimentConfig
from cnnzoo.data.augment import BatchTransform
from cnnzoo.data.mix import mix_batch
from cnnzoo.data.pipeline import Batches, Dataset, load_dataset, step_seed
from cnnzoo.errors import CheckpointError, ConfigError
from cnnzoo.model.build import Network, build_network
from cnnzoo.model.cpu import PrecisionChoice, choose_precision, keep_freed_memory
from cnnzoo.model.devices import device_name, resolve_channels_last, resolve_device
from cnnzoo.model.plan import Plan, plan_experiment
from cnnzoo.model.summary import format_summary
from cnnzoo.runs import rundir
from cnnzoo.runs.initfrom import InitReport, initialise_from
from cnnzoo.runs.lock import lock_run, releases_run_locks
from cnnzoo.training.budget import StepBudget
from cnnzoo.training.callbacks import Callback, RunContext, default_callbacks
from cnnzoo.training.distributed import Distributed
from cnnzoo.training.ema import WeightAverage
from cnnzoo.training.evaluation import Evaluation, evaluate
from cnnzoo.training.imageinit import initialise_from_images
from cnnzoo.training.lookahead import Lookahead, create_lookahead
from cnnzoo.training.losses import LossFn, create_loss
from cnnzoo.training.metrics import EpochMetrics, TrainResult, epoch_line, rate
from cnnzoo.training.optim import create_optimizer, create_scheduler
from cnnzoo.training.phases import Phases
from cnnzoo.training.progress import EpochTally, Progress, StepLosses
from cnnzoo.training.runinfo import check_fits, run_info, start_line
from cnnzoo.training.state import Checkpoints, Position, check_resumable
from cnnzoo.training.step import TrainStep
from cnnzoo.training.stopping import Diverged, DivergenceGuard, Interrupted, SignalStop
from cnnzoo.utils.files import atomic_write_text

# Each phase, and the phase it needs done before it (`Trainer.run` calls them in order).
PHASE_NEEDS: dict[str, str | None] = {
    "open_run": None, "set_up": "open_run", "train_epoch": "set_up", "validate": "set_up",
    "end_epoch": "set_up", "test": "set_up", "finish": "test",
}
ONCE = ("open_run", "set_up", "finish")


class Trainer:
    """Trains `config` into a run directory (or continues the run in `resume`).

    `stop_after_steps` stops (as if interrupted) once that global step is reached;
    tests use it to interrupt at an exact step, and `clock` to simulate a machine's speed.

    Its fields, all of them, in the phase that sets them (`__init__` sets the rest):
    """

    # open_run: where the run trains, and how
    device: torch.device
    precision_choice: PrecisionChoice  # what precision auto chose, and why
    precision: str  # its name: fp32, bf16 or fp16
    # set_up: the network, the data and everything a step needs
    plan: Plan
    model: torch.nn.Module  # the network on the device (DDP-wrapped with several processes)
    init_report: InitReport | None  # what --init-from loaded; None without it
    data: Dataset
    channels_last: bool
    steps_per_epoch: int
    budget: StepBudget  # how many steps the run takes (train.time_budget may cut it)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    metrics_log: rundir.CsvLog  # metrics.csv
    steps_log: rundir.CsvLog  # steps.csv
    average: WeightAverage | None  # train.ema
    lookahead: Lookahead | None  # train.lookahead
    checkpoints: Checkpoints
    step: TrainStep  # the one place the loss is computed
    eval_loss: LossFn  # the loss validation and test report (no label smoothing)
    transform: BatchTransform  # normalisation and augmentation, on the device
    train_split: Batches
    val_split: Batches | None
    progress: Progress
    guard: DivergenceGuard
    context: RunContext  # what callbacks are told about the run

    def __init__(self, config: ExperimentConfig, *, out: Path | None = None,
                 data_root: str | None = None, device: str | None = None,
                 resume: Path | None = None, show_progress: bool = True,
                 stop_after_steps: int | None = None,
                 callbacks: list[Callback] | None = None, init_from: str | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.config = config
        self.init_from = init_from
        self.out = out
        self.data_root = data_root
        self.device_override = device
        self.resume = resume
        self.show_progress = show_progress
        self.stop_after_steps = stop_after_steps
        self.callbacks = default_callbacks() if callbacks is None else callbacks
        self.started = time.perf_counter()
        keep_freed_memory()
        self.dist = Distributed.from_environment()
        self.history: list[EpochMetrics] = []
        self.position = Position()  # the next step; a resume restores it in set_up
        self.restarted_before_checkpoint = False  # torchrun restarted us before a checkpoint
        self.stopper = SignalStop()  # run() installs it; the phases called alone go without
        self.clock = clock  # the time budget's (tests simulate one)
        self.loop_start = 0.0  # the clock when the loop began, less the time a resume had
        self.phases = Phases("Trainer", PHASE_NEEDS, once=ONCE)  # which have run

    def run(self) -> TrainResult:
        self.open_run()
        self.set_up()
        with SignalStop() as self.stopper:
            self.model.train()
            while (self.position.epoch < self.config.train.epochs
                   and self.position.step < self.budget.total):
                self.train_epoch()
        return self.finish(self.test())

    def open_run(self) -> None:
        """Decide the run directory: a resume, torchrun's restart of this run, or new;
        choose the device and join the other processes."""
        self.phases.enter("open_run")
        dist, out, resume = self.dist, self.out, self.resume
        if resume is None and out is not None and dist.continues(out):
            # torchrun restarted us after a failure: continue the same run from its last
            # checkpoint, or start it over if it failed before writing one.
            if (out / rundir.STATE).exists():
                resume = out
            else:
                self.restarted_before_checkpoint = True
        if self.resume is not None:
            rundir.refuse_finished(self.resume)
        if resume is not None:
            if dist.is_main:  # rank 0 holds the run; a torchrun restart takes it over
                lock_run(resume, "resume")
            self.config = check_resumable(resume, self.config)
            self.out = resume
        elif out is not None and not self.restarted_before_checkpoint:
            rundir.check_new_run_dir(out)
        self.resume = resume
        if self.device_override is not None:
            train = replace(self.config.train, device=self.device_override)
            self.config = replace(self.config, train=train)
        self.device = dist.device(resolve_device(self.config.train.device))
        self.precision_choice = choose_precision(self.config.train.precision, self.device)
        self.precision = self.precision_choice.name
        dist.check_sync_batchnorm(self.config, self.device)
        dist.connect(self.device)
        if self.config.data.dataset is None:
            raise ConfigError(
                "the experiment has no data.dataset to train on", where="data", path=("data",),
                fix="add 'data: {dataset: fashion_mnist}' (or --set data.dataset=...)")

    def set_up(self) -> None:
        """Plan, model, data, run files, optimizer, schedule; restore a checkpoint."""
        self.phases.enter("set_up")
        config, dist = self.config, self.dist
        train = config.train
        self.plan = plan_experiment(config)
        self.model = self.create_model(self.plan)
        with dist.local_main_first():
            self.data = load_dataset(config.data, self.plan.input, self.plan.output.depth,
                                     seed=train.seed, data_root=self.data_root)
        check_fits(self.plan, self.data, train.batch_size, dist)
        if self.resume is None:  # a resumed run's checkpoint holds what this computes
            initialise_from_images(self.model, self.data, config.data, self.init_report)
        if self.out is None:
            self.out = dist.broadcast_path(rundir.default_run_dir(config.name,
                                                                claim=dist.is_main))
        self._write_run_files()
        self._set_up_optimizer()
        if self.resume is not None:
            self.position = self.checkpoints.restore(self.device)
            self.budget.restore(self.position.replans, self.position.planned_steps)
        self._set_up_step()
        self._announce()
        self.loop_start = self.clock() - self.position.loop_seconds

    def create_model(self, plan: Plan) -> Network:
        """The network, initialised from the seed, or from `init_from`'s trained weights
        (a resumed run has its own)."""
        torch.manual_seed(self.config.train.seed)
        model = build_network(plan)
        self.init_report = initialise_from(
            model, None if self.resume is not None else self.init_from, self.dist.is_main)
        return model

    def _write_run_files(self) -> None:
        """A new run's config, summary and run.json; a resumed run's classes checked."""
        config, data, dist, out = self.config, self.data, self.dist, self.out
        if self.resume is not None:
            stored = rundir.open_run(out).classes
            if list(stored) != list(data.classes):
                raise CheckpointError(
                    f"the dataset's classes differ from the run's: the run has {stored}, the "
                    f"data {list(data.classes)}")
            return
        if dist.is_main:
            rundir.claim_run_dir(out, restarted=self.restarted_before_checkpoint)
            self.config = config = replace(config, versions=tuple(rundir.versions().items()))
            atomic_write_text(out / rundir.CONFIG, config.to_yaml())
            atomic_write_text(out / rundir.SUMMARY, format_summary(self.plan) + "\n")
            rundir.write_json(out / rundir.RUN,
                              run_info(config, self.plan, data, self.precision, dist))
        dist.barrier()

    def _set_up_optimizer(self) -> None:
        """Model on the device, optimizer, schedule, logs, checkpoints."""
        train, dist, device, out = self.config.train, self.dist, self.device, self.out
        model = self.model.to(device)
        self.channels_last = resolve_channels_last(train.channels_last, self.plan, device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model = dist.prepare(model, train.sync_batchnorm)
        optimizer = create_optimizer(model, train)
        self.steps_per_epoch = self.data.train.steps_per_epoch(train.batch_size)
        self.budget = StepBudget(train.time_budget, self.steps_per_epoch * train.epochs,
                                 self.steps_per_epoch, train.time_budget_replan,
                                 solo=not dist.active)
        self.scheduler = create_scheduler(optimizer, train, self.steps_per_epoch,
                                          lambda step: self.budget.timeline(step))
        self.metrics_log = rundir.CsvLog(out / rundir.METRICS, rundir.METRIC_FIELDS)
        self.steps_log = rundir.CsvLog(out / rundir.STEPS, rundir.STEP_FIELDS)
        if self.restarted_before_checkpoint and dist.is_main:
            self.metrics_log.truncate(0)
            self.steps_log.truncate(0)
        self.average = (WeightAverage(model, train.ema.decay, train.ema.warmup)
                        if train.ema.decay is not None else None)
        self.lookahead = create_lookahead(model, train.lookahead)
        self.checkpoints = Checkpoints(out, self.config.name, model, optimizer, self.scheduler,
                                       self.metrics_log, self.steps_log, dist,
                                       train.optimizer.lr, self.average, self.lookahead)
        self.optimizer = optimizer

    def _set_up_step(self) -> None:
        """The step (on the wrapped, maybe compiled model), the batches, the progress."""
        train, dist, device = self.config.train, self.dist, self.device
        train_model = dist.wrap(self.model)
        if train.compile:
            train_model = torch.compile(train_model)
        self.step = TrainStep(train_model, self.optimizer, create_loss(train.loss).fn, device,
                              self.precision, self.model)
        # Evaluation reports the run's loss without label smoothing: plain cross-entropy
        # for cross_entropy, comparable between runs.
        self.eval_loss = create_loss(replace(train.loss, label_smoothing=0.0)).fn
        data = self.data
        self.transform = BatchTransform(data.mean, data.std, self.config.data.augment,
                                        self.config.data.normalize, device, self.channels_last)
        self.train_split = data.train.to(device)
        self.val_split = data.val.to(device) if data.val is not None else None
        self.progress = Progress(self.show_progress and dist.is_main, train.epochs)
        self.guard = DivergenceGuard(train.divergence, len(data.classes))
        self.context = RunContext(self.out, self.config, self.plan, data.classes)

    def _announce(self) -> None:
        if not self.dist.is_main:
            return
        self.progress.line(start_line(self.config, self.plan, self.data, self.device,
                                      self.precision_choice, self.dist, self.out))
        if self.precision_choice.warning:
            print(self.precision_choice.warning, file=sys.stderr, flush=True)
        if self.resume is not None and self.position.epoch < self.config.train.epochs:
            self.progress.line(f"resuming at epoch {self.position.epoch + 1}, "
                               f"step {self.position.batch}")

    def train_epoch(self) -> None:
        """The rest of the current epoch's batches, then `end_epoch`; a signal (or
        `stop_after_steps`) checkpoints mid-epoch and raises `Interrupted`."""
        self.phases.enter("train_epoch")
        train, dist, position = self.config.train, self.dist, self.position
        epoch = position.epoch
        self.progress.start_epoch(epoch, self.steps_per_epoch, position.batch)
        tally = EpochTally(position, epoch, self.device, self.progress, dist.world,
                           f"the learning rate is likely too high (train.optimizer.lr: "
                           f"{train.optimizer.lr:g}) or the data is not normalised. "
                           f"{self.checkpoints.kept()}")
        losses = StepLosses(self.device, self.guard.watch(tally, Diverged))
        batches = self.train_split.train_batches(
            train.batch_size, seed=train.seed, epoch=epoch, start_step=position.batch,
            rank=dist.rank, world=dist.world)
        for images, labels in batches:
            if position.step >= self.budget.total:
                break
            self.train_step(images, labels, tally, losses)
            signum = dist.agree_stop(self.stopper.signum)
            if self.stop_after_steps is not None and position.step >= self.stop_after_steps:
                signum = signum or signal.SIGINT
            if signum:
                self._close_tally(tally, losses)
                self.progress.end_epoch(f"interrupted at epoch {epoch + 1}, "
                                        f"step {position.batch}")
                position.loop_seconds = self.loop_seconds()
                self.checkpoints.save(position)
                raise Interrupted(signum, self.out, epoch, position.batch, dist.world,
                                  self.data_root)
        self._close_tally(tally, losses)
        self.end_epoch(self.validate())

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, tally: EpochTally,
                   losses: StepLosses) -> None:
        """One batch: augment, `TrainStep`, the position, the schedule, the tally."""
        device, position, dist = self.device, self.position, self.dist
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        seed = self.config.train.seed
        x = self.transform.train(images, step_seed(seed, position.epoch, position.batch))
        augment = self.config.data.augment
        mix = mix_batch(x, augment.mixup, augment.cutmix,
                        step_seed(seed, position.epoch, position.batch, salt=1))
        lr = self.step.optimizer.param_groups[0]["lr"]
        loss, logits = self.step.forward_backward(x if mix is None else mix.images, labels, mix)
        position.batch += 1
        position.step += 1
        losses.add(dist.mean(loss.detach()),
                   (position.step, position.batch, len(labels) * dist.world, lr))
        self.step.update()
        if self.lookahead is not None:  # before the average, which follows the weights
            self.lookahead.update(position.step)
        if self.average is not None:
            self.average.update(position.step)
        if self.budget.after_step(position.step, self.loop_seconds()):
            self._check_budget()
        self.scheduler.step()
        tally.correct += (logits.argmax(1) == labels).sum()

    def loop_seconds(self) -> float:
        """The training loop's time so far, a resumed run's before it included."""
        return self.clock() - self.loop_start

    def _check_budget(self) -> None:
        """The time budget's check: one plan for all processes (the mean of theirs), kept
        in the position, so that the checkpoint holds every re-plan for a resume."""
        step = self.position.step
        proposed = torch.tensor(self.budget.propose(step, self.loop_seconds()),
                                device=self.device)
        line = self.budget.adopt(step, self.dist.sum_int(proposed) // self.dist.world)
        self.position.planned_steps = self.budget.total
        self.position.replans = self.budget.recorded()
        self.progress.total_epochs = math.ceil(self.budget.total / self.steps_per_epoch)
        if line:
            self.progress.line(line)

    def _close_tally(self, tally: EpochTally, losses: StepLosses) -> None:
        """What the epoch's steps added up to, into the position and steps.csv."""
        losses.flush()
        self.position.correct += self.dist.sum_int(tally.correct)
        self.position.seconds += time.perf_counter() - tally.tick
        if self.dist.is_main:
            self.steps_log.append(tally.rows)

    def validate(self) -> EpochMetrics | None:
        """The val split's metrics for the epoch just trained, if there is a val split."""
        self.phases.enter("validate")
        if self.val_split is None:
            return None
        train = self.config.train
        tick = time.perf_counter()
        val = self._evaluate(self.val_split.eval_batches(train.eval_batch_size, self.dist.rank,
                                                         self.dist.world))
        seconds = time.perf_counter() - tick
        return EpochMetrics(self.position.epoch + 1, "val", val.loss, val.accuracy, seconds,
                            rate(val.samples, seconds))

    def end_epoch(self, val: EpochMetrics | None) -> None:
        """The end of an epoch: metrics.csv, callbacks, the epoch line, the checkpoint."""
        self.phases.enter("end_epoch")
        pos, dist = self.position, self.dist
        seen = max(1, pos.seen)
        metrics = [EpochMetrics(pos.epoch + 1, "train", pos.loss_sum / seen, pos.correct / seen,
                                pos.seconds, rate(pos.seen, pos.seconds),
                                lr=self.step.optimizer.param_groups[0]["lr"])]
        if val is not None:
            metrics.append(val)
        self.history.extend(metrics)
        if dist.is_main:
            self.metrics_log.append([m.csv_row() for m in metrics])
            for callback in self.callbacks:
                callback.on_epoch_end(self.context, pos.epoch, metrics, self.evaluated)
        self.progress.end_epoch(epoch_line(self.progress.total_epochs, metrics)
                                + self.budget.status(self.loop_seconds()))
        self.position = Position(epoch=pos.epoch + 1, step=pos.step,
                                 train_seconds=pos.train_seconds + pos.seconds,
                                 train_images=pos.train_images + pos.seen,
                                 planned_steps=pos.planned_steps, replans=pos.replans)
        if self.budget.after_epoch(pos.step, self.loop_seconds()):
            self._check_budget()
        signum = dist.agree_stop(self.stopper.signum)
        self.position.loop_seconds = self.loop_seconds()
        self.checkpoints.save(self.position)
        if signum:
            raise Interrupted(signum, self.out, self.position.epoch, 0, dist.world,
                              self.data_root)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The network that is validated, tested and saved: the weights' average with
        train.ema, else the weights themselves."""
        return self.average.module if self.average is not None else self.model

    def _evaluate(self, batches: Any) -> Evaluation:
        train = self.config.train
        return evaluate(self.evaluated, batches, self.transform, len(self.data.classes),
                        self.device, self.precision, train.tta, self.dist, self.eval_loss)

    def test(self) -> tuple[Evaluation, float]:
        """The test split's evaluation and the seconds it took."""
        self.phases.enter("test")
        tick = time.perf_counter()
        test_split = self.data.test.to(self.device)
        test = self._evaluate(test_split.eval_batches(self.config.train.eval_batch_size,
                                                      self.dist.rank, self.dist.world))
        return test, time.perf_counter() - tick

    def finish(self, tested: tuple[Evaluation, float]) -> TrainResult:
        """results.json, the test row of metrics.csv, `on_train_end`, the last line."""
        self.phases.enter("finish")
        test, seconds = tested
        results = self._results(test)
        if self.dist.is_main:
            # the epochs that ran: a time budget may have cut the configured ones short
            row = EpochMetrics(self.position.epoch, "test", test.loss, test.accuracy,
                               seconds, rate(test.samples, seconds))
            self.metrics_log.append([row.csv_row()])
            for callback in self.callbacks:
                callback.on_train_end(self.context, results, test, self.evaluated)
            rundir.write_json(self.out / rundir.RESULTS, results)
            self.progress.line(
                f"test accuracy {test.accuracy:.2%}, loss {test.loss:.4f} on "
                f"{test.samples:,} images; trained in {self.position.train_seconds:.1f}s "
                f"({results['images_per_s']:,.0f} images/s); run: {self.out}")
        self.dist.close()
        return TrainResult(self.out, results, self.history)

    def _results(self, test: Evaluation) -> dict[str, Any]:
        """What results.json records about the finished run."""
        train, pos = self.config.train, self.position
        last_val = next((m for m in reversed(self.history) if m.split == "val"), None)
        return {
            "name": self.config.name, "dataset": self.data.name,
            "test_accuracy": test.accuracy, "test_loss": test.loss,
            "test_samples": test.samples,
            "val_accuracy": last_val.accuracy if last_val else None,
            "train_seconds": pos.train_seconds,
            "wall_seconds": time.perf_counter() - self.started,
            "epochs": pos.epoch, "epochs_configured": train.epochs, "steps": pos.step,
            "epochs_run": round(pos.step / self.steps_per_epoch, 3),
            "time_budget": train.time_budget,
            "budget": self.budget.record(pos.step, pos.loop_seconds),
            "images_per_s": rate(pos.train_images, pos.train_seconds),
            "params": self.plan.total_params, "macs": self.plan.total_macs,
            "device": device_name(self.device), "processes": self.dist.world,
            "precision": self.precision, "precision_reason": self.precision_choice.reason,
            "channels_last": self.channels_last,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": rundir.command_line(),
        }


@releases_run_locks
def fit(config: ExperimentConfig, *, out: Path | None = None, data_root: str | None = None,
        device: str | None = None, resume: Path | None = None, show_progress: bool = True,
        stop_after_steps: int | None = None, callbacks: list[Callback] | None = None,
        init_from: str | None = None, clock: Callable[[], float] = time.perf_counter
        ) -> TrainResult:
    """Train `config` into a run directory (or continue the run in `resume`). `init_from`
    names trained weights to start from (cnnzoo.runs.initfrom)."""
    return Trainer(config, out=out, data_root=data_root, device=device, resume=resume,
                   show_progress=show_progress, stop_after_steps=stop_after_steps,
                   callbacks=callbacks, init_from=init_from, clock=clock).run()
