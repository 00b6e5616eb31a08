"""Runs of one config with several seeds, under one parent directory.

    PARENT/seeds.json          the config's name and the seeds, written first
    PARENT/config.yaml         the experiment every seed trains (with its own train.seed)
    PARENT/seed-0/ ...         one ordinary run directory per seed, each with its lock
    PARENT/seeds-summary.json  mean, sd, min and max of the seeds' test accuracy and time
    PARENT/seeds-summary.txt   the same, to read

The standard deviation is the sample one (cnnzoo.utils.spread).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.runs import rundir
from cnnzoo.utils.files import atomic_write_text
from cnnzoo.utils.spread import mean_sd_text, statistics

SEEDS = "seeds.json"
SEED_CONFIG = "config.yaml"
SEED_RESULTS = "seeds-summary.json"
SEED_TABLE = "seeds-summary.txt"
MAX_SEEDS = 1000  # more runs than anyone means to start by a typo (--seeds 30000)
STATISTICS = ("test_accuracy", "train_seconds", "wall_seconds")


def parse_seeds(text: str) -> list[int]:
    """`--seeds`: a count N (seeds 0 .. N-1) or a list with commas (`0,1,2`, or `5,`
    for the one seed 5)."""
    words = [w.strip() for w in text.split(",")]
    if "," in text:
        words = [w for w in words if w]
    try:
        numbers = [int(w) for w in words]
    except ValueError:
        raise CnnzooError(f"--seeds takes a count (3: seeds 0, 1, 2) or a list (0,1,2). "
                          f"Received: {text!r}") from None
    if "," not in text:
        count = numbers[0]
        if not 1 <= count <= MAX_SEEDS:
            raise CnnzooError(f"--seeds N takes a count from 1 to {MAX_SEEDS}. Received: {count}")
        return list(range(count))
    if not numbers or any(n < 0 for n in numbers) or len(numbers) > MAX_SEEDS:
        raise CnnzooError(f"--seeds takes up to {MAX_SEEDS} seeds of 0 or more. "
                          f"Received: {text!r}")
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise CnnzooError(f"--seeds names seed {repeated[0]} twice: each seed trains one run")
    return numbers


def seed_dir(parent: Path, seed: int) -> Path:
    return parent / f"seed-{seed}"


def is_seed_parent(path: Path) -> bool:
    return (Path(path) / SEEDS).is_file()


@dataclass(frozen=True)
class SeedParent:
    """A parent directory made by `cnnzoo train --seeds`."""

    path: Path
    name: str
    seeds: list[int]
    init_from: str | None  # the weights every seed starts from (train --init-from)

    @property
    def runs(self) -> list[Path]:
        return [seed_dir(self.path, s) for s in self.seeds]

    @property
    def config(self) -> Path:
        return self.path / SEED_CONFIG

    def finished(self) -> list[bool]:
        return [(run / rundir.RESULTS).is_file() for run in self.runs]


def write_seed_plan(parent: Path, name: str, seeds: list[int], config_yaml: str,
                    init_from: str | None = None) -> SeedParent:
    """Start a parent: its config and seeds.json (the config first, so that a parent
    with seeds.json always has the config its unstarted seeds need)."""
    parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(parent / SEED_CONFIG, config_yaml)
    rundir.write_json(parent / SEEDS, {"name": name, "seeds": seeds, "init_from": init_from,
                                       "command": rundir.command_line()})
    return SeedParent(parent, name, seeds, init_from)


def open_seed_parent(path: Path) -> SeedParent:
    path = Path(path)
    data = rundir.read_json(path / SEEDS)
    seeds = data.get("seeds") if isinstance(data, dict) else None
    if not (isinstance(seeds, list) and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            and len(set(seeds)) == len(seeds)):
        raise CheckpointError(f"{path / SEEDS} is damaged: 'seeds' must be a list of "
                              "distinct seeds")
    if not (path / SEED_CONFIG).is_file():
        raise CheckpointError(f"{path} has {SEEDS} but no {SEED_CONFIG}: the parent is damaged")
    init_from = data.get("init_from")
    return SeedParent(path, str(data.get("name", path.name)), seeds,
                      init_from if isinstance(init_from, str) else None)


def finished_runs(parent: SeedParent) -> list[Path]:
    """The seeds' run directories, refused unless every seed has finished."""
    missing = [f"seed {s}" for s, done in zip(parent.seeds, parent.finished(), strict=True)
               if not done]
    if missing:
        raise CnnzooError(f"{parent.path}: {', '.join(missing)} not finished yet; finish them "
                          f"with: cnnzoo train --resume {parent.path}")
    return parent.runs


def summarize_seeds(parent: SeedParent) -> dict[str, Any]:
    """The finished seeds' results and their statistics."""
    runs = []
    for seed, run in zip(parent.seeds, finished_runs(parent), strict=True):
        results = rundir.read_json(run / rundir.RESULTS)
        rundir.check_results(results, run / rundir.RESULTS)
        runs.append({"seed": seed, "run": run.name,
                     **{key: float(results.get(key) or 0.0) for key in STATISTICS}})
    return {"name": parent.name, "seeds": parent.seeds, "runs": runs,
            **{key: statistics([r[key] for r in runs]) for key in STATISTICS}}


def format_seed_summary(summary: dict[str, Any]) -> str:
    from cnnzoo.utils.format import format_seconds, format_table

    rows = [(str(r["seed"]), f"{r['test_accuracy']:.2%}", format_seconds(r["train_seconds"]),
             format_seconds(r["wall_seconds"])) for r in summary["runs"]]
    acc, train, wall = (summary[key] for key in STATISTICS)
    for what in ("mean", "sd", "min", "max"):
        if acc[what] is not None:
            rows.append((what, f"{acc[what]:.2%}", format_seconds(train[what]),
                         format_seconds(wall[what])))
    table = format_table(("seed", "test acc", "train time", "wall time"), rows,
                         {"test acc", "train time", "wall time"})
    return f"{summary['name']}: {len(summary['runs'])} seeds, {mean_sd_text(acc)}\n\n{table}\n"


def write_seed_summary(parent: SeedParent) -> dict[str, Any]:
    summary = summarize_seeds(parent)
    rundir.write_json(parent.path / SEED_RESULTS, summary)
    atomic_write_text(parent.path / SEED_TABLE, format_seed_summary(summary))
    return summary
