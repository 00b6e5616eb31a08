"""The `cnnzoo` command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnzoo.cli import tools as cli_runs
from cnnzoo.cli.options import (
    USER_ERROR,
    ConfigOption,
    SetOption,
    app,
    check_device,
    complete_config,
)
from cnnzoo.errors import CnnzooError
from cnnzoo.utils.startup import INTERRUPTED, quiet_interrupt

if TYPE_CHECKING:
    from cnnzoo.config.experiment import ExperimentConfig

# The commands in the order --help lists them; those that read runs are in cli_runs.


@app.command()
def summary(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    overrides: SetOption = None,
) -> None:
    """Layer by layer: output volume W x H x D, params, mult-adds, receptive field, and
    what a fully connected layer between the same volumes would cost."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.model.plan import plan_experiment
    from cnnzoo.model.summary import format_summary, summary_dict

    plan = plan_experiment(load_config(config, overrides or []))
    if as_json:
        print(json.dumps(summary_dict(plan), indent=2))
    else:
        print(format_summary(plan))


@app.command(name="config")
def config_(
    config: Annotated[
        str, typer.Argument(help="an experiment file, or the name of a bundled config",
                            autocompletion=complete_config)
    ],
    overrides: SetOption = None,
) -> None:
    """The fully resolved config as YAML, every default filled in: what `cnnzoo train`
    would use, and valid as a --config file itself."""
    from cnnzoo.config.experiment import load_config

    print(load_config(config, overrides or []).to_yaml().rstrip("\n"))


@app.command()
def layers(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every layer type with its parameters and defaults."""
    from cnnzoo.layers.registry import layer_table
    from cnnzoo.utils.format import format_table

    table = layer_table()
    if as_json:
        print(json.dumps(table, indent=2))
        return
    for entry in table:
        primary = next((p["name"] for p in entry["params"] if p["primary"]), None)
        shorthand = f"   (- {entry['type']}: N sets {primary})" if primary else ""
        print(f"{entry['type']}: {entry['doc']}{shorthand}")
        rows = [
            (f"  {p['name']}", p["kind"], _default_text(p["default"]), p["doc"])
            for p in entry["params"]
        ]
        if rows:
            print(format_table(("", "", "", ""), rows, set()).split("\n", 1)[1])
        print()


def _default_text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to this file")] = None,
) -> None:
    """JSON Schema of the experiment file, for editors (yaml-language-server)."""
    from cnnzoo.config.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        from cnnzoo.utils.files import atomic_write_text

        atomic_write_text(out, text)


@app.command()
def train(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="an experiment file or a bundled config's name",
                     autocompletion=complete_config),
    ] = None,
    overrides: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="run directory (default runs/NAME-TIME)")
    ] = None,
    data_root: Annotated[
        str | None, typer.Option("--data-root", help="look for datasets here first")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue the run in this directory")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    nproc: Annotated[
        int | None,
        typer.Option("--nproc", min=1, help="train in N processes on this machine, one per GPU "
                     "or sharing the CPU cores (starts torchrun; batch_size stays the global "
                     "batch)"),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option("--init-from", help="start from trained weights: a bundled config's "
                     "name (its pretrained weights), a run directory, a weights file or an "
                     "https://...#sha256=HEX URL; layers whose name and shape match are "
                     "loaded"),
    ] = None,
) -> None:
    """Train a network on its dataset and save the run (weights, metrics, results)."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.runs.load import load_config_for_resume
    from cnnzoo.training.trainer import fit

    if device is not None:
        check_device(device)
    if init_from is not None and resume is not None:
        raise CnnzooError("--init-from starts a new run; --resume continues one from its own "
                          "weights: give one of them")
    if resume is not None:
        cfg = (load_config(config, overrides or []) if config is not None
               else load_config_for_resume(resume, overrides or []))
    elif config is None:
        raise CnnzooError("give --config FILE (or a bundled name) or --resume RUN_DIR")
    else:
        cfg = load_config(config, overrides or [])
    if nproc is not None and nproc > 1:
        code = _launch_processes(nproc, cfg, config, overrides or [], out, data_root, device,
                                 resume, quiet, init_from)
        if code:
            raise typer.Exit(code)
        return
    fit(cfg, out=out, data_root=data_root, device=device, resume=resume, show_progress=not quiet,
        init_from=init_from)


def _launch_processes(nproc: int, cfg: ExperimentConfig, config: str | None,
                      overrides: list[str], out: Path | None, data_root: str | None,
                      device: str | None, resume: Path | None, quiet: bool,
                      init_from: str | None = None) -> int:
    """`cnnzoo train` with the same options in `nproc` processes under torchrun. The run
    directory is chosen here, so that a restarted worker finds the run it belongs to, and
    what can be refused is refused here, once, rather than by every process."""
    from cnnzoo.model.devices import resolve_device
    from cnnzoo.runs import rundir
    from cnnzoo.training.distributed import Distributed, check_nproc, launch
    from cnnzoo.training.stopping import worker_rank

    if worker_rank() is not None:
        raise CnnzooError("--nproc starts torchrun itself; under torchrun leave it out")
    torch_device = resolve_device(device or cfg.train.device)
    check_nproc(nproc, torch_device)
    Distributed(world=nproc).check_sync_batchnorm(cfg, torch_device)
    args = ["train"]
    if config is not None:
        args += ["--config", config]
    for text in overrides:
        args += ["--set", text]
    if resume is not None:
        from cnnzoo.runs.lock import refuse_live

        refuse_live(resume, "resume")
        args += ["--resume", str(resume)]
    else:
        out = out if out is not None else rundir.default_run_dir(cfg.name)
        rundir.check_new_run_dir(out)
        args += ["--out", str(out)]
    if data_root is not None:
        args += ["--data-root", data_root]
    if device is not None:
        args += ["--device", device]
    if quiet:
        args.append("--quiet")
    if init_from is not None:
        args += ["--init-from", init_from]
    return launch(nproc, args)


app.command(name="eval")(cli_runs.eval_)
app.command()(cli_runs.predict)
app.command(name="filter")(cli_runs.filter_)


@app.command()
def zoo(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The bundled configs (use their names with --config): dataset, input, params,
    mult-adds and the test accuracy measured by scripts/zoo_results.py."""
    from cnnzoo.zoo.catalog import format_zoo, zoo_entries, zoo_json

    entries = zoo_entries()
    if as_json:
        print(json.dumps(zoo_json(entries), indent=2))
    else:
        print(format_zoo(entries))


app.command()(cli_runs.compare)
app.command()(cli_runs.viz)


@app.command()
def tune(
    config: ConfigOption,
    space: Annotated[str, typer.Option("--space", help="a search space file (YAML), or the "
                                       "name of a bundled one (configs/spaces)")],
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
) -> None:
    """Search hyperparameters with Optuna (TPE, median pruning): each trial is a run in
    OUT/trials/; the same command again continues the study. A space file:

    trials: 24 / objective: val_accuracy / space: {train.optimizer.lr: {low: 1.0e-4,
    high: 0.1, log: true}, model.layers[1].conv.kernel: [3, 5, 7]}"""
    import importlib.util
    import os

    from cnnzoo.config.experiment import load_config

    if importlib.util.find_spec("optuna") is None:
        raise CnnzooError("cnnzoo tune needs Optuna: pip install '.[tune]'")
    from cnnzoo.tune.study import TuneSettings, default_storage
    from cnnzoo.tune.study import tune as run_tune

    name = load_config(config, overrides or []).name
    out = out if out is not None else Path("tune") / name
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    run_tune(TuneSettings(
        config=config, base=tuple(overrides or []), space_path=str(space), out=out,
        storage=storage or default_storage(out), study=study or name, trials=trials or 0,
        workers=workers, threads=max(1, (cores or 1) // workers), heartbeat=heartbeat,
        data_root=data_root, device=device,
    ), show_progress=not quiet)


app.command()(cli_runs.export)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; user errors print one line."""
    from cnnzoo.training.stopping import Interrupted, worker_rank

    try:
        code = app(args=argv, prog_name="cnnzoo", standalone_mode=False)
    except CnnzooError as exc:
        rank = worker_rank()
        print(f"{'' if not rank else f'[rank {rank}] '}error: {exc}", file=sys.stderr)
        return USER_ERROR
    except Interrupted as exc:
        if not worker_rank():  # every process stopped at the same step; one says so
            print(str(exc), file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        # The parser's errors (an unknown option, a wrong choice, a missing argument) are
        # click's exceptions, which Typer bundles privately: known by their interface.
        if not (hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `cnnzoo` alone: the help, as is
            exc.show()
            return USER_ERROR
        print(f"error: {exc.format_message()} (see cnnzoo {' '.join(_command(argv))}--help)",
              file=sys.stderr)
        return USER_ERROR
    if code == INTERRUPTED:  # Typer's answer to a KeyboardInterrupt inside a command
        print("interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0  # --help and typer.Exit give a code


def _command(argv: list[str] | None) -> list[str]:
    """The command named in `argv`, with a space after it, for pointing to its --help."""
    words = sys.argv[1:] if argv is None else argv
    name = next((w for w in words if not w.startswith("-")), None)
    known = name is not None and name in typer.main.get_command(app).commands
    return [f"{name} "] if known else []


def main() -> None:
    """The `cnnzoo` console script."""
    with quiet_interrupt():  # also while `run` imports the training code
        code = run()
    sys.exit(code)
