"""`cnnzoo compare`'s verdicts: is the best run better than each other one, beyond noise?

Runs on one test set are compared image by image from their predictions.npz:

- one run against one run: McNemar's exact test on the images exactly one got right,
  and a paired-bootstrap 95% interval of the accuracy difference;
- seed groups (`train --seeds` parents): Welch's t-test over the seeds' accuracies
  decides (it counts the seed's noise), beside McNemar pooled over pairs of seeds (seed
  by seed in order when both sides have as many, else every pair) and an interval from
  the bootstrap of each image's share of seeds right;
- several runs: each against the best, and Holm's correction over those tests.

Runs tested on another dataset or other images are not paired: they are named with
the reason, and the table still shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnzoo.errors import CnnzooError
from cnnzoo.runs.predictions import PREDICTIONS, read_predictions
from cnnzoo.tools import stats

ALPHA = 0.05  # a difference is called real when its (Holm-adjusted) p is below this


@dataclass(frozen=True)
class Outcomes:
    """A run's or a seed group's per-image results on its test set."""

    labels: np.ndarray  # (N,) true classes
    correct: np.ndarray  # (S, N) bool, one row per seed (S = 1 for a single run)
    dataset: str
    accuracies: tuple[float, ...]  # each seed's test accuracy

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.accuracies))


def load_outcomes(runs: tuple[Path, ...]) -> Outcomes:
    """The predictions of a run, or of each run of a seed group, on one test set."""
    kept = []
    for run in runs:
        if not (run / PREDICTIONS).is_file():
            raise CnnzooError(f"{run} has no per-image predictions (runs trained before "
                              f"they were kept); write them with: cnnzoo eval {run} "
                              f"--predictions {run / PREDICTIONS}")
        kept.append(read_predictions(run / PREDICTIONS))
    first = kept[0]
    for other, run in zip(kept[1:], runs[1:], strict=True):
        if other.dataset != first.dataset or not np.array_equal(other.labels, first.labels):
            raise CnnzooError(f"{run} was tested on other images than {runs[0]}")
    if any(p.split != "test" for p in kept):
        raise CnnzooError(f"{runs[0]}'s {PREDICTIONS} is not of the test split")
    return Outcomes(first.labels, np.stack([p.correct for p in kept]), first.dataset,
                    tuple(p.accuracy for p in kept))


def different_test_sets(a: Outcomes, b: Outcomes) -> str | None:
    """Why `a` and `b` cannot be paired image by image, or None when they can."""
    if a.dataset != b.dataset:
        return f"tested on different datasets ({a.dataset} and {b.dataset})"
    if len(a.labels) != len(b.labels):
        return (f"tested on different test sets of {a.dataset} ({len(a.labels):,} and "
                f"{len(b.labels):,} images)")
    mismatched = int(np.count_nonzero(a.labels != b.labels))
    if mismatched:
        return (f"tested on different test sets of {a.dataset} (the true classes differ at "
                f"{mismatched:,} of {len(a.labels):,} images)")
    return None


@dataclass(frozen=True)
class PairedTest:
    """`best` against `other`: differences are best minus other, in accuracy."""

    other: str
    best: str
    difference: float
    only_best: int  # images (pooled over seed pairs) that best alone got right
    only_other: int
    mcnemar_p: float
    interval: tuple[float, float]  # paired bootstrap, 95%
    welch_p: float | None  # seed groups of two or more seeds a side
    p: float  # the deciding test's: Welch where there is one, else McNemar
    holm_p: float = 1.0

    @property
    def significant(self) -> bool:
        return self.holm_p < ALPHA and self.difference != 0

    def verdict(self, corrected: bool) -> str:
        """'BEST is better by 0.42 points (95% CI 0.10 to 0.74, p = 0.009)', or 'no
        difference shown (p = 0.31)' (p after Holm's correction when `corrected`)."""
        p = self.holm_p if corrected else self.p
        which = "Welch p" if self.welch_p is not None else "p"
        shown = f"{which} = {p_text(p)}" + (" after Holm" if corrected else "")
        if self.welch_p is not None:
            shown += f"; pooled McNemar p = {p_text(self.mcnemar_p)}"
        if not self.significant:
            return f"no difference shown between {self.best} and {self.other} ({shown})"
        low, high = (100 * v for v in self.interval)
        return (f"{self.best} is better than {self.other} by {100 * self.difference:.2f} "
                f"points (95% CI {low:.2f} to {high:.2f}, {shown})")


def p_text(p: float) -> str:
    return f"{p:.2g}"


def paired_test(other: Outcomes, best: Outcomes, other_label: str,
                best_label: str) -> PairedTest:
    """McNemar, the bootstrap interval and (seed groups) Welch for one pair."""
    s_other, s_best = len(other.correct), len(best.correct)
    pairs = (list(zip(range(s_other), range(s_best), strict=True)) if s_other == s_best
             else [(i, j) for i in range(s_other) for j in range(s_best)])
    only_other = only_best = 0
    for i, j in pairs:
        a, b = stats.discordant(other.correct[i], best.correct[j])
        only_other, only_best = only_other + a, only_best + b
    mcnemar = stats.mcnemar_exact(only_other, only_best)
    interval = stats.paired_bootstrap_ci(other.correct.mean(0), best.correct.mean(0))
    welch = (stats.welch_t_test(other.accuracies, best.accuracies)[2]
             if s_other > 1 and s_best > 1 else None)
    return PairedTest(other_label, best_label, best.accuracy - other.accuracy, only_best,
                      only_other, mcnemar, interval, welch, mcnemar if welch is None else welch)


@dataclass(frozen=True)
class Verdicts:
    best: str | None  # the label of the run the others were tested against
    tests: dict[str, PairedTest]  # by the other run's label
    refused: dict[str, str]  # by label: why it was not paired with the best

    def json(self) -> dict[str, Any]:
        return {
            "best": self.best, "alpha": ALPHA,
            "bootstrap": {"resamples": stats.BOOTSTRAP_RESAMPLES, "seed": stats.BOOTSTRAP_SEED,
                          "level": 0.95},
            "tests": {label: test_json(t, len(self.tests) > 1)
                      for label, t in self.tests.items()},
            "refused": self.refused,
        }


def test_json(test: PairedTest, corrected: bool) -> dict[str, Any]:
    return {"against": test.best, "difference": test.difference,
            "only_best_right": test.only_best, "only_this_right": test.only_other,
            "mcnemar_p": test.mcnemar_p, "welch_p": test.welch_p, "p": test.p,
            "p_holm": test.holm_p, "interval": list(test.interval),
            "significant": test.significant, "verdict": test.verdict(corrected)}


def compare_to_best(runs: dict[str, tuple[Path, ...]]) -> Verdicts:
    """Each run (by label: its run directories, several for a seed group) against the
    one with the best test accuracy, with Holm's correction over the tests."""
    outcomes: dict[str, Outcomes] = {}
    refused: dict[str, str] = {}
    for label, paths in runs.items():
        try:
            outcomes[label] = load_outcomes(paths)
        except CnnzooError as exc:
            refused[label] = str(exc)
    if len(outcomes) + len(refused) < 2 or not outcomes:
        return Verdicts(None, {}, refused if len(runs) > 1 else {})
    best = max(outcomes, key=lambda label: outcomes[label].accuracy)
    tests: dict[str, PairedTest] = {}
    for label, outcome in outcomes.items():
        if label == best:
            continue
        why = different_test_sets(outcome, outcomes[best])
        if why is not None:
            refused[label] = f"{why}: no paired test against {best}"
            continue
        tests[label] = paired_test(outcome, outcomes[best], label, best)
    adjusted = stats.holm([t.p for t in tests.values()])
    tests = {label: _with_holm(t, p) for (label, t), p in zip(tests.items(), adjusted,
                                                               strict=True)}
    return Verdicts(best, tests, refused)


def _with_holm(test: PairedTest, holm_p: float) -> PairedTest:
    return replace(test, holm_p=holm_p)


def verdict_lines(verdicts: Verdicts) -> list[str]:
    """One line per paired test, then one per run that was not paired."""
    corrected = len(verdicts.tests) > 1
    lines = [t.verdict(corrected) for t in verdicts.tests.values()]
    lines += [f"{label}: {why}" for label, why in verdicts.refused.items()]
    return lines
