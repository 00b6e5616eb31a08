"""`cnnzoo tune --confirm K`: is a study's best trial better than its runner-up beyond
the seed's noise? A search picks its best on one seed's validation score, and the two
top trials are often within noise of each other.

Both trials' configs (the study's base with their parameters) are trained again with
seeds 0 .. K-1, as `train --seeds` parents in OUT/confirm/trial-NNNN (the same command
again resumes them), and compared on the test set as `cnnzoo compare` compares seed
groups: Welch's t-test over the seeds' accuracies, McNemar pooled over seed pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from cnnzoo.config.experiment import ExperimentConfig, rename
from cnnzoo.errors import CnnzooError
from cnnzoo.runs.seeds import SeedParent, is_seed_parent, open_seed_parent
from cnnzoo.tools.paired import Verdicts, compare_to_best, verdict_lines
from cnnzoo.training.seeds import fit_seeds, start_seeds
from cnnzoo.training.trainer import fit
from cnnzoo.tune.record import require_record
from cnnzoo.tune.space import override


@dataclass(frozen=True)
class Confirmation:
    trials: list[FrozenTrial]  # the best, then the runner-up, by the study's objective
    parents: dict[str, Path]  # by label (trial-NNNN): the seed parent each trained into
    verdicts: Verdicts

    def lines(self) -> list[str]:
        best, runner_up = (f"trial-{t.number:04d}" for t in self.trials)
        return [f"the study's best by its objective: {best} ({self.trials[0].value:.4f}); "
                f"runner-up: {runner_up} ({self.trials[1].value:.4f})",
                *verdict_lines(self.verdicts)]


def top_two(study: optuna.Study) -> list[FrozenTrial]:
    """The two best finished trials in the study's direction."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.value is not None]
    if len(done) < 2:
        raise CnnzooError(f"tune --confirm needs two finished trials; study "
                          f"'{study.study_name}' has {len(done)}")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=maximize)[:2]


def confirm(storage: str, study_name: str, out: Path, seeds: int, data_root: str | None,
            device: str | None, show_progress: bool = True) -> Confirmation:
    """Train the best and the runner-up with `seeds` seeds each and compare them."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise CnnzooError(f"no study '{study_name}' in {storage}") from None
    record = require_record(study, storage)
    space = record.space(study_name)
    trials = top_two(study)
    parents: dict[str, Path] = {}
    for trial in trials:
        config = record.base(study_name, [override(p.key, trial.params[p.key])
                                          for p in space.params])
        config = rename(config, f"{config.name}-trial{trial.number:04d}")
        label = f"trial-{trial.number:04d}"
        parent = _parent(config, out / "confirm" / label, seeds)
        if show_progress:
            print(f"{label}: {seeds} seeds in {parent.path}", flush=True)

        def fit_one(seed_config: ExperimentConfig, run: Path, started: bool) -> None:
            fit(seed_config, out=None if started else run, resume=run if started else None,
                data_root=data_root, device=device, show_progress=False)

        fit_seeds(parent, config, fit_one, show_progress=False)
        parents[label] = parent.path
    verdicts = compare_to_best({label: tuple(open_seed_parent(path).runs)
                                for label, path in parents.items()})
    return Confirmation(trials, parents, verdicts)


def _parent(config: ExperimentConfig, path: Path, seeds: int) -> SeedParent:
    """A new parent for the trial, or the one an earlier --confirm left (resumed)."""
    if not is_seed_parent(path):
        return start_seeds(config, list(range(seeds)), path)
    parent = open_seed_parent(path)
    if parent.seeds != list(range(seeds)):
        raise CnnzooError(f"{path} holds {len(parent.seeds)} seeds, not {seeds}: confirm "
                          f"with --confirm {len(parent.seeds)}, or give another --out")
    return parent
