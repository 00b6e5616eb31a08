"""What the user sees while training runs: a bar per epoch on a terminal, plain lines
otherwise, and, when CNNZOO_PROGRESS_FILE names a file, the position within the epoch
as JSON (rewritten at most once a second, for `cnnzoo lab`); and each step's loss read
back from the device (`StepLosses`) and added up over an epoch (`EpochTally`)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from cnnzoo.training.state import Position
from cnnzoo.training.stopping import Diverged
from cnnzoo.utils.files import atomic_write_text

PROGRESS_FILE = "CNNZOO_PROGRESS_FILE"  # the variable that names the progress file
PROGRESS_SECONDS = 1.0  # the file is rewritten at most this often


class Progress:
    """A tqdm bar per epoch on a terminal; plain lines otherwise. Rank 0 only."""

    def __init__(self, enabled: bool, total_epochs: int) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.total_epochs = total_epochs
        self.bar = None
        self.steps = 0
        self.file = os.environ.get(PROGRESS_FILE) if enabled else None
        self.written = 0.0

    def start_epoch(self, epoch: int, steps: int, done: int) -> None:
        self.steps = steps
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

    def write(self, position: dict[str, Any], now: float) -> None:
        """The position as JSON in the progress file; a file that cannot be written is
        left alone, as a picture that cannot be drawn is: the run matters more."""
        if self.file is None or now - self.written < PROGRESS_SECONDS:
            return
        self.written = now
        try:
            atomic_write_text(self.file, json.dumps({**position, "epochs": self.total_epochs,
                                                     "steps": self.steps, "time": time.time()}))
        except OSError:
            self.file = None

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
        self.first_batch: int | None = None

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
                          "loss": f"{value:.6f}", "lr": f"{lr:.6g}"})  # steps.csv
        if self.progress.tty:  # rank 0 alone: its own share stands for the batch
            elapsed = pos.seconds + time.perf_counter() - self.tick
            self.progress.update(value, self.accuracy, pos.seen / max(elapsed, 1e-9))
        if self.progress.file is not None:
            self._write_position(batch)

    def _write_position(self, batch: int) -> None:
        """The progress file: where the epoch is, its speed and the time left at it."""
        now = time.perf_counter()
        if self.first_batch is None:
            self.first_batch = batch - 1
        pos, progress = self.position, self.progress
        done = batch - self.first_batch
        per_step = (now - self.tick) / max(done, 1)
        left = (progress.steps - batch) + (progress.total_epochs - self.epoch - 1) * progress.steps
        progress.write({"epoch": self.epoch + 1, "batch": batch, "loss": pos.loss_sum / max(
            pos.seen, 1), "images_per_s": pos.seen / max(pos.seconds + now - self.tick, 1e-9),
            "eta_seconds": max(0.0, left * per_step)}, now)

    def accuracy(self) -> float:
        pos = self.position
        return float(pos.correct + int(self.correct) * self.world) / max(1, pos.seen)
