"""`cnnzoo tune`: a hyperparameter search, each trial an ordinary run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnzoo.cli.options import SetOption, complete_config
from cnnzoo.errors import CnnzooError

ConfirmOption = Annotated[
    int | None, typer.Option("--confirm", min=2, help="run no search: train the study's best "
                             "and runner-up trials again with K seeds each (in OUT/confirm/) "
                             "and say whether the best is better beyond the seeds' noise "
                             "(Welch's t-test, pooled McNemar)")
]


def tune(
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="an experiment file, or the name of a "
                                 "bundled config (cnnzoo zoo)", autocompletion=complete_config),
    ] = None,
    space: Annotated[
        str | None, typer.Option("--space", help="a search space file (YAML), or the name of "
                                 "a bundled one (configs/spaces)"),
    ] = None,
    overrides: SetOption = None,
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="finished trials the study ends with, "
                                 "in total (default: the space's trials)"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="worker processes on this machine, "
                          "sharing its cores")
    ] = 1,
    storage: Annotated[
        str | None, typer.Option("--storage", help="an Optuna storage URL (e.g. "
                                 "postgresql://host/db) or journal:PATH; default: "
                                 "sqlite in OUT")
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="the study's name (default: the config's)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="directory for the trials and the report "
                                  "(default tune/NAME)")
    ] = None,
    data_root: Annotated[
        str | None, typer.Option("--data-root", help="look for the dataset here first")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or mps")] = None,
    heartbeat: Annotated[
        int, typer.Option("--heartbeat", min=1, help="seconds between a worker's signs of "
                          "life; a trial silent for 3x this is failed and run again")
    ] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    report: Annotated[bool, typer.Option("--report", help="run nothing: write trials.csv, "
                      "best.yaml and the pictures of the study in --storage into --out")] = False,
    confirm: ConfirmOption = None,
) -> None:
    """Search hyperparameters with Optuna (TPE, median pruning): each trial is a run in
    OUT/trials/; the same command again continues the study. A space file:

    trials: 24 / objective: val_accuracy / space: {train.optimizer.lr: {low: 1.0e-4,
    high: 0.1, log: true}, 'model.layers[1].conv.kernel': [3, 5, 7]}"""
    import importlib.util
    import os

    from cnnzoo.config.experiment import load_config

    if importlib.util.find_spec("optuna") is None:
        raise CnnzooError("cnnzoo tune needs Optuna: pip install '.[tune]'")
    from cnnzoo.tune.study import TuneSettings
    from cnnzoo.tune.study import report as report_study
    from cnnzoo.tune.study import tune as run_tune

    if confirm is not None:
        return _confirm(config, overrides, storage, study, out, confirm, data_root, device, quiet)
    if report:
        if out is None:
            raise CnnzooError("tune --report needs --out DIR, the folder for the report")
        name = study or (load_config(config, overrides or []).name if config else None)
        report_study(storage or f"sqlite:///{(out / 'study.db').resolve()}", name, out)
        return
    if config is None or space is None:
        raise CnnzooError(f"tune needs {'--config' if config is None else '--space'} (or "
                          "--report to report on a study)")
    name = load_config(config, overrides or []).name
    out = out if out is not None else Path("tune") / name
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    run_tune(TuneSettings(
        config=config, base=tuple(overrides or []), space_path=str(space), out=out,
        storage=storage, study=study or name, trials=trials or 0,
        workers=workers, threads=max(1, (cores or 1) // workers), heartbeat=heartbeat,
        data_root=data_root, device=device,
    ), show_progress=not quiet)


def _confirm(config: str | None, overrides: list[str] | None, storage: str | None,
             study: str | None, out: Path | None, seeds: int, data_root: str | None,
             device: str | None, quiet: bool) -> None:
    """`tune --confirm K` on the study in --storage (default: OUT's sqlite file)."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.tune.confirm import confirm

    name = study or (load_config(config, overrides or []).name if config else None)
    if name is None:
        raise CnnzooError("tune --confirm needs --study NAME (or --config, whose name the "
                          "study has by default)")
    out = out if out is not None else Path("tune") / name
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    if storage is None and not (out / "study.db").is_file():
        raise CnnzooError(f"no study in {out} (no study.db); give --out or --storage")
    result = confirm(url, name, out, seeds, data_root, device, show_progress=not quiet)
    print("\n".join(result.lines()))
