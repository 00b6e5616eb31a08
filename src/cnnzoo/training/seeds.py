"""`cnnzoo train --seeds`: one run per seed under one parent directory, one after the
other, each an ordinary run (its own lock, checkpoint and resume), then the summary.

A seed's run equals the single run `cnnzoo train --set train.seed=S` would make: the
seed is the only thing that differs between the runs of a parent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.errors import CnnzooError
from cnnzoo.runs import rundir
from cnnzoo.runs.lock import refuse_live
from cnnzoo.runs.seeds import (
    SEED_TABLE,
    SeedParent,
    open_seed_parent,
    seed_dir,
    write_seed_plan,
    write_seed_summary,
)
from cnnzoo.training.stopping import Interrupted

# Trains one seed: (its config, its run directory, whether to resume it).
FitOne = Callable[[ExperimentConfig, Path, bool], None]


def with_seed(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    return replace(config, train=replace(config.train, seed=seed))


def start_seeds(config: ExperimentConfig, seeds: list[int], parent: Path | None,
                init_from: str | None = None) -> SeedParent:
    """A new parent (default runs/NAME-TIME) holding `config` and `seeds`."""
    if parent is None:
        parent = rundir.default_run_dir(config.name)
    if parent.exists() and any(parent.iterdir()):
        raise CnnzooError(f"{parent} already exists and is not empty; choose a new --out, or "
                          f"continue it with --resume {parent}")
    return write_seed_plan(parent, config.name, seeds, config.to_yaml(), init_from)


def resume_seeds(parent: Path, overrides: list[str]) -> tuple[SeedParent, ExperimentConfig]:
    """An interrupted parent and its config (with `--set` overrides, which each seed's
    resume refuses if they change the run)."""
    seeds = open_seed_parent(parent)
    if all(seeds.finished()):
        raise CnnzooError(f"cannot resume {parent}: all its seeds ({len(seeds.seeds)}) are "
                          f"finished; see {parent / SEED_TABLE}")
    return seeds, load_config(seeds.config, overrides)


def fit_seeds(parent: SeedParent, config: ExperimentConfig, fit_one: FitOne,
              show_progress: bool = True) -> dict[str, Any]:
    """Train every seed that has not finished, in order: a seed with a checkpoint is
    resumed, a missing one started; then write and return the summary."""
    for index, (seed, done) in enumerate(zip(parent.seeds, parent.finished(), strict=True)):
        if done:
            continue
        run = seed_dir(parent.path, seed)
        started = (run / rundir.STATE).exists()
        if rundir.holds_run(run) and not started:
            refuse_live(run, "resume")
            raise CnnzooError(f"{run} stopped before its first checkpoint, so it cannot be "
                              f"resumed; remove that folder and run cnnzoo train --resume "
                              f"{parent.path} again")
        if show_progress:
            how = "resuming" if started else "training"
            print(f"seed {seed} ({index + 1} of {len(parent.seeds)}): {how} {run}",
                  flush=True)
        try:
            fit_one(with_seed(config, seed), run, started)
        except Interrupted:
            print(f"seed {seed} stopped; to go on with this seed and the ones after it: "
                  f"cnnzoo train --resume {parent.path}", file=sys.stderr, flush=True)
            raise
    summary = write_seed_summary(parent)
    if show_progress:
        print((parent.path / SEED_TABLE).read_text(), end="", flush=True)
    return summary
