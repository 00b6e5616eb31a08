"""`cnnzoo train`: one process, or one per core or GPU with torch.distributed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnzoo.cli.options import (
    SetOption,
    check_device,
    complete_config,
)
from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:
    from cnnzoo.config.experiment import ExperimentConfig


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
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="one run per seed under one parent directory "
                     "(PARENT/seed-S): a count (3: seeds 0, 1, 2) or a list (0,1,2); then the "
                     "mean, sd, min and max of their test accuracy and time in "
                     "PARENT/seeds-summary.txt. --out names the parent; --resume PARENT "
                     "continues the seed it stopped in"),
    ] = None,
) -> None:
    """Train a network on its dataset and save the run (weights, metrics, results)."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.runs.load import load_config_for_resume
    from cnnzoo.runs.seeds import is_seed_parent
    from cnnzoo.training.trainer import fit

    if device is not None:
        check_device(device)
    if init_from is not None and resume is not None:
        raise CnnzooError("--init-from starts a new run; --resume continues one from its own "
                          "weights: give one of them")
    if seeds is not None or (resume is not None and is_seed_parent(resume)):
        _train_seeds(seeds, config, overrides or [], out, data_root, device, resume, quiet,
                     nproc or 1, init_from)
        return
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
    if resume is None and out is None:  # runs/NAME-TIME: refused before the data loads
        from cnnzoo.runs.rundir import default_run_dir
        from cnnzoo.utils.files import check_writable

        check_writable(default_run_dir(cfg.name), folder=True)
    fit(cfg, out=out, data_root=data_root, device=device, resume=resume, show_progress=not quiet,
        init_from=init_from)


def _train_seeds(seeds: str | None, config: str | None, overrides: list[str],
                 out: Path | None, data_root: str | None, device: str | None,
                 resume: Path | None, quiet: bool, nproc: int, init_from: str | None) -> None:
    """`train --seeds` and `train --resume PARENT`: the seeds one after the other, each
    in `nproc` processes where asked."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.runs.seeds import is_seed_parent, parse_seeds
    from cnnzoo.training.seeds import fit_seeds, resume_seeds, start_seeds
    from cnnzoo.training.trainer import fit

    if resume is not None and not is_seed_parent(resume):
        raise CnnzooError("--seeds starts new runs; --resume continues the run in "
                          f"{resume}: give one of them")
    if resume is not None:
        if seeds is not None or config is not None:
            raise CnnzooError(f"{resume} holds runs of several seeds: resume it with --resume "
                              "alone (its config and seeds are in it)")
        parent, cfg = resume_seeds(resume, overrides)
    elif config is None:
        raise CnnzooError("--seeds needs --config FILE (or a bundled name)")
    else:
        cfg = load_config(config, overrides)
        parent = start_seeds(cfg, parse_seeds(str(seeds)), out, init_from)

    def fit_one(seed_cfg: ExperimentConfig, run: Path, started: bool) -> None:
        start_from = None if started else parent.init_from
        if nproc == 1:
            fit(seed_cfg, out=None if started else run, resume=run if started else None,
                data_root=data_root, device=device, show_progress=not quiet,
                init_from=start_from)
            return
        code = _launch_processes(
            nproc, seed_cfg, str(parent.config), [*overrides, f"train.seed={seed_cfg.train.seed}"],
            None if started else run, data_root, device, run if started else None, quiet,
            start_from)
        if code:
            raise typer.Exit(code)

    fit_seeds(parent, cfg, fit_one, show_progress=not quiet)


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
        rundir.refuse_finished(resume)
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
