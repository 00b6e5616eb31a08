"""compare's verdicts on constructed runs: a trained run's directory copied, with the
predictions (and the accuracy in results.json) written to order, so that the counts
behind every test are known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from cnnzoo.runs.predictions import PREDICTIONS, Predictions, write_predictions
from cnnzoo.runs.seeds import write_seed_plan

# Every test here reads runs trained end to end (the `trained` fixture).
pytestmark = pytest.mark.slow

N = 1000
LABELS = np.arange(N) % 10


def make_run(trained: dict[str, Path], dest: Path, right: np.ndarray,
             labels: np.ndarray = LABELS, dataset: str = "fashion_mnist") -> Path:
    """A finished run that got exactly the images in `right` (bool) right."""
    shutil.copytree(trained["small"], dest)
    predicted = np.where(right, labels, (labels + 1) % 10)
    top = np.stack([predicted, (predicted + 1) % 10, (predicted + 2) % 10], 1)
    scores = np.tile(np.array([0.8, 0.15, 0.05], np.float32), (len(labels), 1))
    write_predictions(dest / PREDICTIONS, Predictions(labels, predicted, top, scores, "test",
                                                      dataset))
    results = json.loads((dest / "results.json").read_text())
    results.update(test_accuracy=float(right.mean()), dataset=dataset)
    (dest / "results.json").write_text(json.dumps(results))
    return dest


def right_on(count: int, start: int = 0, n: int = N) -> np.ndarray:
    right = np.zeros(n, bool)
    right[start:start + count] = True
    return right


def make_parent(trained: dict[str, Path], dest: Path, rights: list[np.ndarray]) -> Path:
    config = (trained["small"] / "config.yaml").read_text()
    parent = write_seed_plan(dest, "small", list(range(len(rights))), config)
    for seed, right in enumerate(rights):
        make_run(trained, dest / f"seed-{seed}", right)
    return parent.path


def compare_json(cli, *runs: Path) -> dict:
    result = cli("compare", *runs, "--json", "--no-plot")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_identical_predictions_show_no_difference(trained, cli, tmp_path):
    a = make_run(trained, tmp_path / "a", right_on(800))
    b = make_run(trained, tmp_path / "b", right_on(800))
    test = compare_json(cli, a, b)["paired"]["tests"]["b"]
    assert test["mcnemar_p"] == 1.0 and test["difference"] == 0.0
    assert test["interval"] == [0.0, 0.0] and not test["significant"]
    shown = cli("compare", a, b, "--no-plot")
    assert "no difference shown between a and b (p = 1)" in shown.out


def test_sixty_more_images_right_is_a_real_difference(trained, cli, tmp_path):
    a = make_run(trained, tmp_path / "a", right_on(800))
    b = make_run(trained, tmp_path / "b", right_on(860))
    paired = compare_json(cli, a, b)["paired"]
    assert paired["best"] == "b" and paired["bootstrap"]["resamples"] == 10_000
    test = paired["tests"]["a"]
    assert (test["only_best_right"], test["only_this_right"]) == (60, 0)
    assert test["mcnemar_p"] == pytest.approx(scipy_stats.binomtest(0, 60, 0.5).pvalue)
    assert test["significant"] and test["difference"] == pytest.approx(0.06)
    low, high = test["interval"]
    assert 0 < low < 0.06 < high  # 60 of 1000 images, resampled: about 4.5 to 7.5 points
    shown = cli("compare", a, b, "--no-plot").out
    assert f"b is better than a by 6.00 points (95% CI {100 * low:.2f} to {100 * high:.2f}, " \
           f"p = {test['p']:.2g})" in shown
    row = next(line for line in shown.splitlines() if line.startswith("a "))
    assert " -6.00 " in row


def test_a_small_difference_on_few_images_is_not_shown(trained, cli, tmp_path):
    # A alone right on 10 images, B alone on 15: p = 0.42 by the binomial test.
    base = right_on(700)
    a_right, b_right = base.copy(), base.copy()
    a_right[700:710] = True
    b_right[710:725] = True
    a = make_run(trained, tmp_path / "a", a_right)
    b = make_run(trained, tmp_path / "b", b_right)
    test = compare_json(cli, a, b)["paired"]["tests"]["a"]
    expected = scipy_stats.binomtest(10, 25, 0.5).pvalue
    assert test["mcnemar_p"] == pytest.approx(expected) and not test["significant"]
    assert test["verdict"] == f"no difference shown between b and a (p = {expected:.2g})"


@pytest.mark.parametrize(("labels", "dataset", "why"), [
    (LABELS, "mnist", "tested on different datasets (mnist and fashion_mnist)"),
    (LABELS[:900], "fashion_mnist", "different test sets of fashion_mnist (900 and 1,000"),
    ((LABELS + 1) % 10, "fashion_mnist", "the true classes differ at 1,000 of 1,000 images"),
])
def test_different_test_sets_are_refused_but_shown(trained, cli, tmp_path, labels, dataset,
                                                   why):
    a = make_run(trained, tmp_path / "a", right_on(900))
    b = make_run(trained, tmp_path / "b", right_on(450, n=len(labels)), labels, dataset)
    data = compare_json(cli, a, b)
    assert [r["label"] for r in data["runs"]] == ["a", "b"]
    assert data["paired"]["tests"] == {}
    assert why in data["paired"]["refused"]["b"]
    shown = cli("compare", a, b, "--no-plot")
    assert shown.code == 0 and why in shown.out and "no paired test against a" in shown.out
    assert "not paired" in next(line for line in shown.out.splitlines()
                                if line.startswith("b "))


def test_a_run_without_predictions_is_named_with_the_fix(trained, cli, tmp_path):
    a = make_run(trained, tmp_path / "a", right_on(900))
    b = make_run(trained, tmp_path / "b", right_on(800))
    (b / PREDICTIONS).unlink()
    refused = compare_json(cli, a, b)["paired"]["refused"]
    assert f"cnnzoo eval {b} --predictions {b / PREDICTIONS}" in refused["b"]


def test_seed_groups_use_welch_over_seeds_and_pool_mcnemar(trained, cli, tmp_path):
    a_counts, b_counts = (800, 812, 795), (830, 826, 841)
    a = make_parent(trained, tmp_path / "pa", [right_on(c) for c in a_counts])
    b = make_parent(trained, tmp_path / "pb", [right_on(c) for c in b_counts])
    data = compare_json(cli, a, b)
    rows = {r["label"]: r for r in data["runs"]}
    accuracies = np.array(a_counts) / N
    assert rows["pa"]["test_accuracy"] == pytest.approx(accuracies.mean())
    assert rows["pa"]["test_accuracy_sd"] == pytest.approx(accuracies.std(ddof=1))
    assert len(rows["pa"]["seeds"]) == 3
    test = data["paired"]["tests"]["pa"]
    expected = scipy_stats.ttest_ind(np.array(b_counts) / N, accuracies, equal_var=False)
    assert test["welch_p"] == pytest.approx(expected.pvalue) and test["p"] == test["welch_p"]
    # Seed by seed, the B run is right on every image its A run is, and on more.
    only_b = sum(b - a for a, b in zip(a_counts, b_counts, strict=True))
    assert (test["only_best_right"], test["only_this_right"]) == (only_b, 0)
    assert test["mcnemar_p"] == pytest.approx(scipy_stats.binomtest(0, only_b, 0.5).pvalue)
    shown = cli("compare", a, b, "--no-plot").out
    assert "(3 seeds)" in shown and "Welch p = " in shown and "pooled McNemar p = " in shown


def test_several_runs_each_against_the_best_with_holm(trained, cli, tmp_path):
    best = make_run(trained, tmp_path / "best", right_on(900))
    others = {"near": right_on(890), "far": right_on(850), "mid": right_on(880)}
    runs = [make_run(trained, tmp_path / name, right) for name, right in others.items()]
    data = compare_json(cli, *runs, best)
    paired = data["paired"]
    assert paired["best"] == "best"
    raw = {name: scipy_stats.binomtest(0, 900 - int(right.sum()), 0.5).pvalue
           for name, right in others.items()}
    # Holm by hand: sorted far (x3), mid (x2), near (x1), never decreasing.
    far = min(1, 3 * raw["far"])
    mid = max(far, min(1, 2 * raw["mid"]))
    near = max(mid, min(1, raw["near"]))
    for name, expected in (("far", far), ("mid", mid), ("near", near)):
        assert paired["tests"][name]["mcnemar_p"] == pytest.approx(raw[name])
        assert paired["tests"][name]["p_holm"] == pytest.approx(expected)
    shown = cli("compare", *runs, best, "--no-plot").out
    assert "after Holm" in shown and "vs best" in shown.splitlines()[0]
