"""Things that happen alongside training, on the main process: pictures, event files.

The trainer calls every callback at the end of each epoch (with the epoch's numbers,
`EpochMetrics`) and once at the end of the run. A callback must not change training:
it reads the model, never steps it.

The pictures written into the run directory:

    curves.png     loss and accuracy per epoch, train and val (and test at the end),
                   drawn during training and again at the end
    confusion.png  the test set's confusion matrix, with class names
    filters.png    the first layer's filters as an image grid

and, beside them, `predictions.npz`: every test image's true class, predicted class
and top scores (cnnzoo.runs.predictions), which `cnnzoo compare` pairs between runs.

Where the `tensorboard` package is installed, the run directory also gets event
files (scalars per epoch and these pictures), so `tensorboard --logdir runs` works.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from cnnzoo.config.experiment import ExperimentConfig
    from cnnzoo.model.plan import Plan
    from cnnzoo.training.evaluation import Evaluation
    from cnnzoo.training.metrics import EpochMetrics

CURVES = "curves.png"
CONFUSION = "confusion.png"
FILTERS = "filters.png"


@dataclass
class RunContext:
    """What a callback may look at."""

    run_dir: Path
    config: ExperimentConfig
    plan: Plan
    classes: tuple[str, ...]


class Callback:
    def on_epoch_end(self, ctx: RunContext, epoch: int, metrics: list[EpochMetrics],
                     model: nn.Module) -> None:
        """After epoch `epoch` (0-based): `metrics` are its numbers, train first, then val."""

    def on_train_end(self, ctx: RunContext, results: dict[str, Any], test: Evaluation,
                     model: nn.Module) -> None:
        """After the test evaluation, before the run's results are final."""


def _guarded(what: str, draw: Callable[[], object]) -> bool:
    """Run `draw`; a failure is one warning line, never the end of a run: pictures and
    event files are by-products, and hours of training must not be lost to them."""
    try:
        draw()
    except Exception as exc:
        print(f"warning: {what} was not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return True


class Pictures(Callback):
    """curves.png during training and at the end; confusion.png and filters.png at the end.

    Drawing the curves takes a few tenths of a second, so during training they are
    drawn at most every `redraw_seconds` (counted from the start): a short run draws
    them once, at the end, and short epochs are not slowed."""

    def __init__(self, redraw_seconds: float = 30.0) -> None:
        self.redraw_seconds = redraw_seconds
        self.drawn_at = time.monotonic()

    def on_epoch_end(self, ctx: RunContext, epoch: int, metrics: list[EpochMetrics],
                     model: nn.Module) -> None:
        if time.monotonic() - self.drawn_at >= self.redraw_seconds:
            _guarded(CURVES, lambda: self._curves(ctx))
            self.drawn_at = time.monotonic()

    def on_train_end(self, ctx: RunContext, results: dict[str, Any], test: Evaluation,
                     model: nn.Module) -> None:
        from cnnzoo.utils import pictures

        _guarded(CURVES, lambda: self._curves(ctx))
        _guarded(CONFUSION, lambda: pictures.save_png(
            pictures.confusion_figure(test.confusion.numpy(), ctx.classes,
                                      f"{ctx.config.name} (test)"),
            ctx.run_dir / CONFUSION))
        _guarded(FILTERS, lambda: self._filters(ctx, model))

    @staticmethod
    def _curves(ctx: RunContext) -> None:
        from cnnzoo.runs.rundir import read_metrics
        from cnnzoo.utils import pictures

        pictures.save_png(pictures.curves_figure(read_metrics(ctx.run_dir), ctx.config.name),
                          ctx.run_dir / CURVES)

    @staticmethod
    def _filters(ctx: RunContext, model: nn.Module) -> None:
        from cnnzoo.model.inspect import first_layer_filters
        from cnnzoo.utils import pictures

        found = first_layer_filters(_unwrapped(model))
        if found is None:
            return
        plan, weights = found
        title = f"{ctx.config.name}: layer {plan.index} {plan.label}"
        pictures.save_png(pictures.filters_figure(weights, title), ctx.run_dir / FILTERS)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The Network inside a DistributedDataParallel or compiled wrapper."""
    while not hasattr(model, "plan") and hasattr(model, "module"):
        model = model.module
    return model


class TestPredictions(Callback):
    """predictions.npz at the end: the test set's per-image results."""

    def on_train_end(self, ctx: RunContext, results: dict[str, Any], test: Evaluation,
                     model: nn.Module) -> None:
        from cnnzoo.runs.predictions import PREDICTIONS, write_predictions

        if test.predictions is not None:
            dataset = str(results.get("dataset", ctx.config.data.dataset))
            _guarded(PREDICTIONS, lambda: write_predictions(
                ctx.run_dir / PREDICTIONS, test.predictions.to_file("test", dataset)))


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardEvents(Callback):
    """Event files in the run directory: loss, accuracy, lr and images/s per epoch,
    the test result, and the pictures above as images."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.failed = False

    def _writer(self, ctx: RunContext, epoch: int) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run drops the events an interrupted one wrote after
            # its last checkpoint, as metrics.csv does.
            self.writer = SummaryWriter(log_dir=str(ctx.run_dir), purge_step=epoch + 1)
        return self.writer

    def _guarded(self, draw: Callable[[], object]) -> None:
        if not self.failed:
            self.failed = not _guarded("the TensorBoard event file", draw)

    def on_epoch_end(self, ctx: RunContext, epoch: int, metrics: list[EpochMetrics],
                     model: nn.Module) -> None:
        def log() -> None:
            writer = self._writer(ctx, epoch)
            for split in metrics:
                _scalars(writer, split, epoch + 1)
            writer.flush()

        self._guarded(log)

    def on_train_end(self, ctx: RunContext, results: dict[str, Any], test: Evaluation,
                     model: nn.Module) -> None:
        def log() -> None:
            epochs = ctx.config.train.epochs
            writer = self._writer(ctx, epochs)
            writer.add_scalar("loss/test", test.loss, epochs)
            writer.add_scalar("accuracy/test", test.accuracy, epochs)
            for name in (CURVES, CONFUSION, FILTERS):
                path = ctx.run_dir / name
                if path.exists():
                    writer.add_image(path.stem, _rgb(path), epochs, dataformats="HWC")
            writer.close()

        self._guarded(log)


def _scalars(writer: Any, metrics: EpochMetrics, step: int) -> None:
    split = metrics.split
    writer.add_scalar(f"loss/{split}", metrics.loss, step)
    writer.add_scalar(f"accuracy/{split}", metrics.accuracy, step)
    if split == "train":
        writer.add_scalar("lr", metrics.lr, step)
        writer.add_scalar("images_per_s/train", metrics.images_per_s, step)


def _rgb(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def default_callbacks() -> list[Callback]:
    """The callbacks `cnnzoo train` runs: the test predictions, pictures, and TensorBoard
    event files where the package is installed (`pip install 'cnnzoo[tensorboard]'`)."""
    callbacks: list[Callback] = [TestPredictions(), Pictures()]
    if tensorboard_available():
        callbacks.append(TensorBoardEvents())
    return callbacks
