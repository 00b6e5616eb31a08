"""Why training stops before its last epoch: a signal (SIGINT/SIGTERM), after which
the run is checkpointed and can be resumed exactly, or a loss that diverged. No
torch here: the CLI catches `Interrupted` around every command.

Divergence: a NaN loss stops training at once. A learning rate far too high can instead
drive the loss to 1e15 and keep it finite, and the run would go on to the end at chance
accuracy. The rule: a run diverged when its training loss (the mean over the global
batch) stays above `factor` x ln(classes) for `steps` consecutive steps. ln(classes) is
the loss of a uniform guess, about where a freshly initialised classifier starts, so a
run that is learning never spends long at ten times it; a single bad batch does not stop
a run, only a streak does. The streak restarts with a resumed run.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cnnzoo.config.experiment import DivergenceConfig
from cnnzoo.errors import CnnzooError


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
    """The loss became NaN or infinite, or stayed far above a uniform guess's (the
    DivergenceGuard's rule)."""


class _Tally(Protocol):
    epoch: int
    hint: str

    def add_loss(self, value: float, info: tuple[int, int, int, float]) -> None: ...


class DivergenceGuard:
    """Counts the consecutive steps whose loss is above the limit."""

    def __init__(self, config: DivergenceConfig, num_classes: int) -> None:
        self.config = config
        self.num_classes = num_classes
        # One class: every guess is right and the loss of a uniform guess is 0.
        on = config.enabled and num_classes > 1
        self.limit = config.factor * math.log(num_classes) if on else math.inf
        self.streak = 0

    def diverged(self, loss: float) -> bool:
        """Whether `loss`, the latest step's, ends a streak long enough to stop."""
        self.streak = self.streak + 1 if loss > self.limit else 0
        return self.streak >= self.config.steps

    def explain(self, loss: float) -> str:
        return (f"the loss stayed above {self.limit:.3g} ({self.config.factor:g} x "
                f"ln {self.num_classes}, the loss of a uniform guess) for {self.streak} steps "
                f"and reached {loss:.3g}")

    def watch(self, tally: _Tally,
              error: Callable[[str], Exception]) -> Callable[[float, Any], None]:
        """`tally.add_loss`, then the check; a diverged run raises `error(message)`, worded
        like the NaN stop: where, the learning rate, the hint, and how to turn this off."""

        def add_loss(value: float, info: tuple[int, int, int, float]) -> None:
            tally.add_loss(value, info)
            if self.diverged(value):
                step, batch, _, lr = info
                raise error(
                    f"{self.explain(value)} at epoch {tally.epoch + 1}, step {batch} (global "
                    f"step {step}) with lr {lr:.3g}; {tally.hint}. To train on anyway: --set "
                    f"train.divergence.enabled=false"
                )

        return add_loss


class SignalStop:
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

    def __enter__(self) -> SignalStop:
        # Signal handlers can only be set from the main thread.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def worker_rank() -> int | None:
    """This process's rank when it is one of several started by torchrun, else None
    (read from torchrun's variables alone, so that error messages need no torch)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ.get("RANK", "0"))
    return None
