"""Why training stops before its last epoch: a signal (SIGINT/SIGTERM), after which
the run is checkpointed and can be resumed exactly, or a loss that diverged. No
torch here: the CLI catches `Interrupted` around every command."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

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
    """The loss became NaN or infinite."""


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
