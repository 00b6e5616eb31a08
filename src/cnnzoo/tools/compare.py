"""`cnnzoo compare`: trained runs side by side, as a table and as test accuracy
against parameters."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.runs import rundir
from cnnzoo.utils.format import format_seconds

_GLOB_CHARACTERS = set("*?[")


def expand_run_args(args: list[str]) -> list[Path]:
    """Run directories from the command line: paths, and glob patterns (quoted, so
    the shell leaves them to us) of which the matches that are cnnzoo runs count.
    A path is kept as given, so that one that is not a run is named in the error."""
    paths: list[Path] = []
    for arg in args:
        if _GLOB_CHARACTERS & set(arg) and not Path(arg).exists():
            matches = [Path(p) for p in sorted(glob.glob(arg))]
            found = [p for p in matches
                     if (p / rundir.CONFIG).is_file() and (p / rundir.RUN).is_file()]
            if not found:
                what = f"{len(matches)} matches, none a cnnzoo run" if matches else "no matches"
                raise CnnzooError(f"no cnnzoo runs match '{arg}' ({what})")
            paths.extend(found)
        else:
            paths.append(Path(arg))
    unique: list[Path] = []
    for path in paths:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    dataset: str
    params: int
    macs: int
    test_accuracy: float | None  # None: the run has not finished
    train_seconds: float | None
    device: str | None
    epochs: int | None
    training: str | None = None  # "still training (epoch i/n)" while a process trains it


def summarize_run(path: Path) -> RunSummary:
    """What `compare` shows of one run; an unfinished run has no accuracy yet."""
    from cnnzoo.model.plan import plan_experiment

    run = rundir.open_run(path)
    results = run.results
    if results is not None:
        return RunSummary(run.path, str(results.get("name", run.config.name)),
                          str(results.get("dataset", run.info.get("dataset", "?"))),
                          int(results["params"]), int(results["macs"]),
                          float(results["test_accuracy"]), float(results["train_seconds"]),
                          str(results.get("device", "?")), results.get("epochs"))
    plan = plan_experiment(run.config)
    training = rundir.still_training(run)
    state = training.short() if training is not None else None
    return RunSummary(run.path, run.config.name, str(run.info.get("dataset", "?")),
                      plan.total_params, plan.total_macs, None, None, None, None, state)


def compare_runs(args: list[str],
                 skipped: list[tuple[Path, str]] | None = None) -> list[RunSummary]:
    """The runs' summaries. A folder that is not a run at all (a typo) stops the
    comparison. With a `skipped` list, a run whose files are damaged is added to it
    with the reason and left out; without, it stops the comparison too. Either way at
    least one run must be readable."""
    paths = expand_run_args(args)
    if not paths:
        raise CnnzooError("give at least one run directory (or a quoted pattern: 'runs/*')")
    rows = []
    for path in paths:
        try:
            rows.append(summarize_run(path))
        except CnnzooError as exc:
            is_run = (path / rundir.CONFIG).is_file() and (path / rundir.RUN).is_file()
            if skipped is None or len(paths) == 1 or not is_run:
                raise
            skipped.append((path, str(exc)))
    if not rows:
        raise CnnzooError("none of the runs could be read: " + "; ".join(
            why for _, why in (skipped or [])))
    return rows


def labels(rows: list[RunSummary]) -> list[str]:
    """Each run's name, or its directory's where two runs share a name."""
    names = [r.name for r in rows]
    return [r.name if names.count(r.name) == 1 else r.path.name for r in rows]


def format_comparison(rows: list[RunSummary]) -> str:
    from cnnzoo.utils.format import format_table

    header = ("name", "dataset", "params", "mult-adds", "test acc", "epochs", "train time",
              "device", "run")
    table = [
        (label, r.dataset, f"{r.params:,}", f"{r.macs:,}",
         f"{r.test_accuracy:.2%}" if r.test_accuracy is not None else r.training or "unfinished",
         str(r.epochs) if r.epochs is not None else "-", format_seconds(r.train_seconds),
         r.device or "-", str(r.path))
        for label, r in zip(labels(rows), rows, strict=True)
    ]
    return format_table(header, table, {"params", "mult-adds", "test acc", "epochs",
                                        "train time"})


def comparison_json(rows: list[RunSummary]) -> list[dict[str, Any]]:
    return [
        {"label": label, "run": str(r.path), "name": r.name, "dataset": r.dataset,
         "params": r.params, "macs": r.macs, "test_accuracy": r.test_accuracy,
         "train_seconds": r.train_seconds, "device": r.device, "epochs": r.epochs,
         "training": r.training}
        for label, r in zip(labels(rows), rows, strict=True)
    ]


def plot_comparison(rows: list[RunSummary], path: Path) -> Path | None:
    """Test accuracy against parameters for the finished runs; None if none finished."""
    from cnnzoo.utils import pictures

    points = [pictures.Point(label, r.params, r.test_accuracy)
              for label, r in zip(labels(rows), rows, strict=True)
              if r.test_accuracy is not None]
    if not points:
        return None
    datasets = sorted({r.dataset for r in rows if r.test_accuracy is not None})
    title = f"test accuracy against parameters ({', '.join(datasets)})"
    return pictures.save_png(pictures.accuracy_params_figure(points, title), path)
