"""`cnnzoo tune --confirm K` on a study made to order (two finished trials with known
parameters and values): both trials trained again with K seeds, compared by Welch's
t-test over the seeds' test accuracies, which scipy computes again here."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution
from scipy import stats as scipy_stats

from cnnzoo.config.experiment import load_config
from cnnzoo.tune.record import StudyRecord, write_record
from tests.tune.test_tune import tiny

SPACE = """
trials: 2
objective: val_accuracy
space:
  train.optimizer.lr: {low: 1.0e-4, high: 0.1, log: true}
"""


def made_study(tmp_path, lrs_and_values):
    out = tmp_path / "study"
    out.mkdir()
    config = tiny(tmp_path, epochs=1)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}",
                                direction="maximize")
    write_record(study, StudyRecord(load_config(config).to_yaml(), SPACE))
    lr = FloatDistribution(1e-4, 0.1, log=True)
    for value_lr, value in lrs_and_values:
        study.add_trial(optuna.trial.create_trial(
            params={"train.optimizer.lr": value_lr}, distributions={"train.optimizer.lr": lr},
            value=value))
    return config, out


@pytest.mark.slow
def test_confirm_retrains_the_best_two_with_seeds_and_tests_them(tmp_path, cli):
    # Trial 1 is the best by value, trial 2 the runner-up, trial 0 is not retrained.
    _, out = made_study(tmp_path, [(0.0002, 0.1), (0.01, 0.9), (0.05, 0.5)])
    result = cli("tune", "--confirm", "2", "--out", out, "--study", "s", "-q")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (out / "confirm").iterdir()) == ["trial-0001", "trial-0002"]
    accuracies = {}
    for number, lr in ((1, 0.01), (2, 0.05)):
        parent = out / "confirm" / f"trial-{number:04d}"
        summary = json.loads((parent / "seeds-summary.json").read_text())
        assert summary["seeds"] == [0, 1]
        for seed in (0, 1):
            stored = load_config(parent / f"seed-{seed}" / "config.yaml")
            assert stored.train.optimizer.lr == pytest.approx(lr)
            assert stored.train.seed == seed
        accuracies[number] = [r["test_accuracy"] for r in summary["runs"]]
    assert "the study's best by its objective: trial-0001 (0.9000); runner-up: trial-0002" \
        in result.out
    a, b = accuracies[1], accuracies[2]
    if len(set(a)) == len(set(b)) == 1:  # no spread on either side: scipy's p is nan
        p = 1.0 if a[0] == b[0] else 0.0  # and ours says whether the means differ
    else:
        p = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    assert f"Welch p = {p:.2g}" in result.out

    again = cli("tune", "--confirm", "2", "--out", out, "--study", "s", "-q")
    assert again.code == 0 and again.out == result.out  # nothing trained twice
    other_count = cli("tune", "--confirm", "3", "--out", out, "--study", "s")
    assert other_count.code == 2 and "holds 2 seeds, not 3" in other_count.err


def test_confirm_needs_two_finished_trials(tmp_path, cli):
    _, out = made_study(tmp_path, [(0.01, 0.9)])
    result = cli("tune", "--confirm", "2", "--out", out, "--study", "s")
    assert result.code == 2 and "needs two finished trials; study 's' has 1" in result.err
    assert not (out / "confirm").exists()


def test_confirm_without_a_study_is_refused(tmp_path, cli):
    result = cli("tune", "--confirm", "2", "--out", tmp_path / "none", "--study", "s")
    assert result.code == 2 and "no study in" in result.err
