"""`cnnzoo compare`: trained runs side by side, as a table and as test accuracy
against parameters, with a verdict on whether the best is better beyond noise
(cnnzoo.tools.paired). A `train --seeds` parent counts as one row: its seeds' mean
and standard deviation."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError
from cnnzoo.runs import rundir
from cnnzoo.runs.seeds import is_seed_parent, open_seed_parent, summarize_seeds
from cnnzoo.tools.paired import Verdicts, compare_to_best, p_text, verdict_lines
from cnnzoo.utils.format import format_seconds
from cnnzoo.utils.spread import mean_sd_text, statistics

_GLOB_CHARACTERS = set("*?[")


def expand_run_args(args: list[str]) -> list[Path]:
    """Run directories from the command line: paths, and glob patterns (quoted, so
    the shell leaves them to us) of which the matches that are cnnzoo runs count.
    A path is kept as given, so that one that is not a run is named in the error."""
    paths: list[Path] = []
    for arg in args:
        if _GLOB_CHARACTERS & set(arg) and not Path(arg).exists():
            matches = [Path(p) for p in sorted(glob.glob(arg))]
            found = [p for p in matches if _is_run(p)]
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


def _is_run(path: Path) -> bool:
    """A run directory or a `train --seeds` parent."""
    return (((path / rundir.CONFIG).is_file() and (path / rundir.RUN).is_file())
            or is_seed_parent(path))


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
    seed_runs: tuple[Path, ...] = ()  # a seed group's runs, in its seeds' order
    seed_accuracies: tuple[float, ...] = ()  # and their test accuracies

    @property
    def runs(self) -> tuple[Path, ...]:
        """The run directories whose predictions stand for this row."""
        return self.seed_runs or (self.path,)

    @property
    def accuracy_sd(self) -> float | None:
        if len(self.seed_accuracies) < 2:
            return None
        return statistics(list(self.seed_accuracies))["sd"]

    def accuracy_text(self) -> str:
        if self.test_accuracy is None:
            return self.training or "unfinished"
        if not self.seed_runs:
            return f"{self.test_accuracy:.2%}"
        stats = {"mean": self.test_accuracy, "sd": self.accuracy_sd}
        return f"{mean_sd_text(stats)} ({len(self.seed_runs)} seeds)"


def summarize_run(path: Path) -> RunSummary:
    """What `compare` shows of one run; an unfinished run has no accuracy yet."""
    from cnnzoo.model.plan import plan_experiment

    if is_seed_parent(path):
        return summarize_seed_group(path)
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


def summarize_seed_group(path: Path) -> RunSummary:
    """A `train --seeds` parent as one row: the mean of its seeds' accuracy and time
    (an unfinished parent shows its config's size and how many seeds finished)."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.model.plan import plan_experiment

    parent = open_seed_parent(path)
    finished = parent.finished()
    if not all(finished):
        plan = plan_experiment(load_config(parent.config))
        return RunSummary(path, parent.name, "?", plan.total_params, plan.total_macs,
                          None, None, None, None,
                          f"{sum(finished)} of {len(finished)} seeds finished")
    summary = summarize_seeds(parent)
    first = summarize_run(parent.runs[0])
    return RunSummary(path, parent.name, first.dataset, first.params, first.macs,
                      summary["test_accuracy"]["mean"], summary["train_seconds"]["mean"],
                      first.device, first.epochs, None, tuple(parent.runs),
                      tuple(r["test_accuracy"] for r in summary["runs"]))


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
            if skipped is None or len(paths) == 1 or not _is_run(path):
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


def paired_verdicts(rows: list[RunSummary]) -> Verdicts:
    """The finished runs each against the best (see cnnzoo.tools.paired)."""
    return compare_to_best({label: r.runs for label, r in zip(labels(rows), rows, strict=True)
                            if r.test_accuracy is not None})


def _versus_best(label: str, verdicts: Verdicts) -> tuple[str, str]:
    """The table's 'vs best' and 'p' cells for one run."""
    if label == verdicts.best:
        return "best", "-"
    if label in verdicts.tests:
        test = verdicts.tests[label]
        return f"{-100 * test.difference:+.2f}", p_text(test.holm_p)
    return ("not paired" if label in verdicts.refused else "-"), "-"


def format_comparison(rows: list[RunSummary], verdicts: Verdicts | None = None) -> str:
    """The table; with `verdicts`, each run's difference from the best in points and the
    p-value (Holm-corrected where there are several), then one verdict line each."""
    from cnnzoo.utils.format import format_table

    header = ("name", "dataset", "params", "mult-adds", "test acc", "epochs", "train time",
              "device", "run")
    paired = verdicts is not None and verdicts.best is not None
    if paired:
        header = (*header[:5], "vs best", "p", *header[5:])
    table = []
    for label, r in zip(labels(rows), rows, strict=True):
        cells = [label, r.dataset, f"{r.params:,}", f"{r.macs:,}", r.accuracy_text(),
                 str(r.epochs) if r.epochs is not None else "-",
                 format_seconds(r.train_seconds), r.device or "-", str(r.path)]
        if paired:
            cells[5:5] = _versus_best(label, verdicts)
        table.append(tuple(cells))
    text = format_table(header, table, {"params", "mult-adds", "test acc", "vs best", "p",
                                        "epochs", "train time"})
    if verdicts is not None and (verdicts.tests or verdicts.refused):
        text += "\n\n" + "\n".join(verdict_lines(verdicts))
    return text


def comparison_json(rows: list[RunSummary]) -> list[dict[str, Any]]:
    return [
        {"label": label, "run": str(r.path), "name": r.name, "dataset": r.dataset,
         "params": r.params, "macs": r.macs, "test_accuracy": r.test_accuracy,
         "test_accuracy_sd": r.accuracy_sd,
         "seeds": [{"run": str(p), "test_accuracy": a}
                   for p, a in zip(r.seed_runs, r.seed_accuracies, strict=True)] or None,
         "train_seconds": r.train_seconds, "device": r.device, "epochs": r.epochs,
         "training": r.training}
        for label, r in zip(labels(rows), rows, strict=True)
    ]


def plot_comparison(rows: list[RunSummary], path: Path) -> Path | None:
    """Test accuracy against parameters for the finished runs; None if none finished."""
    from cnnzoo.utils import pictures

    points = [pictures.Point(label, r.params, r.test_accuracy, accuracy_sd=r.accuracy_sd)
              for label, r in zip(labels(rows), rows, strict=True)
              if r.test_accuracy is not None]
    if not points:
        return None
    datasets = sorted({r.dataset for r in rows if r.test_accuracy is not None})
    title = f"test accuracy against parameters ({', '.join(datasets)})"
    return pictures.save_png(pictures.accuracy_params_figure(points, title), path)
