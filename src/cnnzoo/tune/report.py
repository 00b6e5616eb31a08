"""What `cnnzoo tune` leaves in its output directory at the end of a study, made from
the storage alone (the record the study keeps of its config and space), so that
`cnnzoo tune --report` on any machine writes the same files.

    trials.csv        one row per trial: number, state, objective, epochs run, seconds,
                      test accuracy (complete trials), run directory, parameters
    best.yaml         the best trial's complete experiment, for `cnnzoo train --config`
    history.png       the objective of each trial and the best so far
    importances.png   how much each parameter explains of the objective
    slice.png         the objective against each parameter
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cnnzoo.config.experiment import rename
from cnnzoo.tune.record import StudyRecord, require_record
from cnnzoo.tune.space import SearchSpace, override
from cnnzoo.utils.files import atomic_write_text

TRIALS_CSV = "trials.csv"
BEST = "best.yaml"
PICTURES = ("history.png", "importances.png", "slice.png")


def reported_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that ran: surplus ones, refused before training, are left out."""
    return [t for t in study.get_trials() if not t.user_attrs.get("surplus")]


def _status(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED and str(trial.user_attrs.get("stopped", "")).startswith(
            "diverged"):
        return "diverged"
    return trial.state.name.lower()


def trial_rows(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    """One plain row per trial, the table's and trials.csv's."""
    rows = []
    for trial in reported_trials(study):
        value = trial.value if trial.state == TrialState.COMPLETE else (
            trial.intermediate_values[max(trial.intermediate_values)]
            if trial.intermediate_values else None)
        row = {"trial": trial.number, "state": _status(trial),
               space.objective: value, "epochs": trial.user_attrs.get("epochs"),
               "seconds": trial.user_attrs.get("seconds"),
               "test_accuracy": trial.user_attrs.get("test_accuracy"),
               "run_dir": trial.user_attrs.get("run_dir")}
        row.update({p.key: trial.params.get(p.key) for p in space.params})
        rows.append(row)
    return rows


def format_trials(rows: list[dict[str, Any]], space: SearchSpace) -> str:
    """The table printed at the end (a pruned trial's objective is its last epoch's)."""
    from cnnzoo.utils.format import format_table

    keys = ["trial", "state", space.objective, "epochs", "seconds",
            *(p.key for p in space.params)]
    cells = [tuple(_cell(row[k]) for k in keys) for row in rows]
    return format_table(tuple(keys), cells, {"trial", space.objective, "epochs", "seconds"})


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_trials_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def best_config_yaml(study: optuna.Study, record: StudyRecord, space: SearchSpace) -> str:
    """The base experiment with the best trial's parameters, as a complete file."""
    best = study.best_trial
    overrides = [override(p.key, best.params[p.key]) for p in space.params]
    config = record.base(study.study_name, overrides)
    config = rename(config, f"{config.name}-tuned")
    header = (f"# The best of {len(reported_trials(study))} trials of study '{study.study_name}' "
              f"(cnnzoo tune): trial {best.number}, {space.objective} {best.value:.4f}.\n"
              f"# Its run: {best.user_attrs.get('run_dir')}\n")
    return header + config.to_yaml()


def epochs_saved(study: optuna.Study) -> tuple[int, int]:
    """(epochs the finished trials were set to run, epochs pruning spared them)."""
    planned = saved = 0
    for trial in study.trials:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            want = int(trial.user_attrs.get("planned_epochs", 0))
            planned += want
            saved += want - int(trial.user_attrs.get("epochs", want))
    return planned, saved


def draw_pictures(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's matplotlib plots; a plot that cannot be drawn (too few trials for
    importances, say) is a warning, never the end of a finished study."""
    from optuna.visualization import matplotlib as plots

    drawers: dict[str, Callable[[], Any]] = {
        "history.png": lambda: plots.plot_optimization_history(study),
        "importances.png": lambda: plots.plot_param_importances(study),
        "slice.png": lambda: plots.plot_slice(study),
    }
    written = []
    for name, draw in drawers.items():
        if _save(draw, out / name):
            written.append(out / name)
    return written


def _save(draw: Callable[[], Any], path: Path) -> bool:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw()
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.get_figure()
            figure.set_size_inches(max(9.0, figure.get_size_inches()[0]), 4.8)  # long key names
            figure.tight_layout()
        from cnnzoo.utils.files import atomic_write_with

        atomic_write_with(path, lambda f: figure.savefig(f, format="png", dpi=100))
        plt.close(figure)
    except Exception as exc:
        print(f"warning: {path.name} was not drawn: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        plt.close("all")
        return False
    return True


def write_report(study: optuna.Study, out: Path, storage: str = "its storage") -> None:
    """Print the table; write trials.csv, best.yaml and the pictures into `out`."""
    record = require_record(study, storage)
    space = record.space(study.study_name)
    rows = trial_rows(study, space)
    if not rows:
        print(f"study '{study.study_name}' has no trials yet: nothing to report",
              file=sys.stderr)
        return
    print(format_trials(rows, space))
    write_trials_csv(out / TRIALS_CSV, rows)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        print("no trial has completed yet: no best.yaml", file=sys.stderr)
        return
    atomic_write_text(out / BEST, best_config_yaml(study, record, space))
    pictures = draw_pictures(study, out)
    planned, saved = epochs_saved(study)
    best = study.best_trial
    print(f"\nbest: trial {best.number}, {space.objective} {best.value:.4f}, test accuracy "
          f"{best.user_attrs.get('test_accuracy', float('nan')):.2%}; pruning saved {saved} of "
          f"{planned} epochs ({saved / max(planned, 1):.0%})")
    print(f"wrote {out / BEST}, {out / TRIALS_CSV}"
          + "".join(f", {p}" for p in pictures))
