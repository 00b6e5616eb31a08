"""Things that happen alongside training, on the main process: pictures, event files.

`fit` calls every callback at the end of each epoch and once at the end of the
run. A callback must not change training: it reads the model, never steps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from cnnzoo.config import ExperimentConfig
    from cnnzoo.plan import Plan
    from cnnzoo.train import Evaluation


@dataclass
class RunContext:
    """What a callback may look at."""

    run_dir: Path
    config: ExperimentConfig
    plan: Plan
    classes: tuple[str, ...]


class Callback:
    def on_epoch_end(self, ctx: RunContext, epoch: int, rows: list[dict[str, Any]],
                     model: nn.Module) -> None:
        """After epoch `epoch` (0-based): `rows` are its metrics.csv rows."""

    def on_train_end(self, ctx: RunContext, results: dict[str, Any], test: Evaluation,
                     model: nn.Module) -> None:
        """After the test evaluation, before the run's results are final."""


def default_callbacks() -> list[Callback]:
    """The callbacks `cnnzoo train` runs."""
    return []
