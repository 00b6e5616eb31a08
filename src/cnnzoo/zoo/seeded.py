"""Zoo records over several seeds: what a `cnnzoo train --seeds` parent adds to a
config's record, whether a parent left by an earlier measurement can be recorded as
it is or resumed, and adding the seeds of a parent to a record of one seed.

A seeded record is the record of its first seed's run, as a single run's would be
(accuracy, times, command, shipped weights), with `seed` (which seed that is),
`seeds` (one entry per seed: {"seed", "test_accuracy", "train_seconds",
"wall_seconds"}) and `test_accuracy_sd` (the sample sd over the seeds) added.
"""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path
from typing import Any, Literal

from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.errors import CnnzooError
from cnnzoo.runs import rundir
from cnnzoo.runs.seeds import (
    SEED_RESULTS,
    open_seed_parent,
    seed_dir,
    summarize_seeds,
)
from cnnzoo.utils.spread import statistics

SEED_KEYS = ("seed", "test_accuracy", "train_seconds", "wall_seconds")

ParentState = Literal["finished", "interrupted", "other"]


def parent_state(out: Path, config: ExperimentConfig, seeds: list[int]) -> ParentState:
    """What an earlier measurement left in `out`: a parent of exactly `config` and
    `seeds` whose seeds have all finished ('finished') or not ('interrupted'), or
    anything else ('other': nothing, a single run, or another config or seeds)."""
    from cnnzoo.training.state import config_differences

    try:
        parent = open_seed_parent(out)
        if parent.seeds != seeds or config_differences(load_config(parent.config), config):
            return "other"
    except (CnnzooError, OSError):
        return "other"
    return "finished" if all(parent.finished()) else "interrupted"


def clear_unstarted(out: Path) -> list[Path]:
    """Remove the seed folders of parent `out` that stopped before their first
    checkpoint and that no live process trains into: `train --resume PARENT` refuses
    them, and there is nothing in them to resume. Returns what was removed."""
    import shutil

    from cnnzoo.runs.lock import holder

    parent = open_seed_parent(out)
    removed = []
    for run, done in zip(parent.runs, parent.finished(), strict=True):
        if (done or not run.exists() or (run / rundir.STATE).exists()
                or holder(run) is not None):
            continue
        shutil.rmtree(run)
        removed.append(run)
    return removed


def read_summary(out: Path) -> dict[str, Any]:
    """The parent's seeds-summary.json; summarised from its seeds' runs where the file
    is missing (a measurement stopped between the last seed and the summary)."""
    path = out / SEED_RESULTS
    if path.is_file():
        summary = rundir.read_json(path)
        if isinstance(summary, dict) and isinstance(summary.get("runs"), list):
            return summary
    return summarize_seeds(open_seed_parent(out))


def first_seed_run(out: Path) -> tuple[int, Path]:
    """The parent's first seed and its run directory: the run a seeded record is of."""
    seed = open_seed_parent(out).seeds[0]
    return seed, seed_dir(out, seed)


def seed_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's `seeds` from a parent's summary: each seed's test accuracy as its run
    gave it, its times to a tenth of a second as the record's own."""
    return [{"seed": int(run["seed"]), "test_accuracy": float(run["test_accuracy"]),
             "train_seconds": round(float(run["train_seconds"]), 1),
             "wall_seconds": round(float(run["wall_seconds"]), 1)}
            for run in summary["runs"]]


def with_seeds(record: dict[str, Any], seed: int, entries: list[dict[str, Any]]
               ) -> dict[str, Any]:
    """`record` (the run of `seed`) with the seeds' entries and their sd."""
    entries = sorted(entries, key=lambda e: e["seed"])
    sd = statistics([e["test_accuracy"] for e in entries])["sd"]
    return {**record, "seed": seed, "seeds": entries, "test_accuracy_sd": sd}


def record_sets(command: str) -> list[str]:
    """The `--set` overrides of a record's command: what the record's run trained."""
    words = shlex.split(command)
    return [value for flag, value in itertools.pairwise(words) if flag == "--set"]


def own_entry(record: dict[str, Any], seed: int) -> dict[str, Any]:
    """The seed entry of a record's own run."""
    return {"seed": seed, **{key: record[key] for key in SEED_KEYS[1:]}}


def add_seeds(record: dict[str, Any], config_path: Path, parent_path: Path,
              parent_command: str) -> dict[str, Any]:
    """`record` with the finished seeds of `parent_path` added, without training its own
    run again: the parent must train the record's config (its `--set` overrides
    included) and none of the record's seeds. `parent_command` is the pasteable command
    of the parent, kept as the record's `seeds_command` (after those of parents added
    before, where seeds were trained one parent each)."""
    from cnnzoo.runs.seeds import finished_runs
    from cnnzoo.training.state import config_differences

    config = load_config(config_path, record_sets(record["command"]))
    parent = open_seed_parent(parent_path)
    finished_runs(parent)  # refused, with the resume command, unless every seed finished
    differences = config_differences(load_config(parent.config), config)
    if differences:
        raise CnnzooError(f"{parent_path} trains another config than the record of "
                          f"{config_path.stem}: {', '.join(differences)}")
    seed = record.get("seed", config.train.seed)
    have = list(record.get("seeds") or [own_entry(record, seed)])
    repeated = sorted({e["seed"] for e in have} & set(parent.seeds))
    if repeated:
        raise CnnzooError(f"{parent_path} trains seed {repeated[0]}, which the record of "
                          f"{config_path.stem} already has")
    added = with_seeds(record, seed, have + seed_entries(read_summary(parent_path)))
    earlier = record.get("seeds_command")  # seeds added before from parents of their own
    added["seeds_command"] = f"{earlier}; {parent_command}" if earlier else parent_command
    if added.get("pretrained"):  # the weights are the record's own run's
        added["pretrained"] = {**added["pretrained"], "seed": seed}
    return added


def parent_command(record_command: str, parent_path: Path, seeds: list[int]) -> str:
    """The pasteable command that trains `seeds` of a record's config into a parent: the
    record's command with these `--seeds` and the parent's folder under runs/zoo/."""
    words = shlex.split(record_command)
    listed = ",".join(str(s) for s in seeds) + ("," if len(seeds) == 1 else "")  # '5,': seed 5
    if "--seeds" in words:
        words[words.index("--seeds") + 1] = listed
    else:
        at = words.index("--config") + 2 if "--config" in words else len(words)
        words[at:at] = ["--seeds", listed]
    if "--out" in words:
        words[words.index("--out") + 1] = f"runs/zoo/{parent_path.name}"
    return shlex.join(words)  # an OMP_NUM_THREADS=N in front needs no quotes
