"""compare's statistics against scipy, a plain numpy loop and worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from cnnzoo.tools import stats


@pytest.mark.parametrize(("only_a", "only_b"), [
    (1, 9), (9, 1), (120, 162), (5, 0), (0, 60), (7, 8), (4000, 4100), (30_000, 30_500),
])
def test_mcnemar_is_the_binomial_test_on_the_discordant_counts(only_a, only_b):
    expected = scipy_stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert stats.mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_without_a_difference_is_one():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(40, 40) == 1.0


def test_mcnemar_on_hand_made_prediction_vectors():
    # 100 images: both right on 70, both wrong on 10, A alone on 4, B alone on 16.
    a = np.array([1] * 70 + [0] * 10 + [1] * 4 + [0] * 16, bool)
    b = np.array([1] * 70 + [0] * 10 + [0] * 4 + [1] * 16, bool)
    rng = np.random.default_rng(3)
    order = rng.permutation(100)  # the pairing is per image, not per position in a sort
    assert stats.discordant(a[order], b[order]) == (4, 16)
    # By hand: 2 * (C(20,0) + ... + C(20,4)) / 2^20 = 2 * 6196 / 1048576.
    assert stats.mcnemar_exact(4, 16) == pytest.approx(2 * 6196 / 2**20, rel=1e-12)


def test_bootstrap_matches_a_plain_numpy_loop():
    rng = np.random.default_rng(11)
    a = rng.random(500) < 0.85
    b = rng.random(500) < 0.9
    low, high = stats.paired_bootstrap_ci(a, b, resamples=2000, seed=5)
    loop_rng = np.random.default_rng(5)
    diffs = []
    for _ in range(2000):
        idx = loop_rng.integers(0, 500, 500)
        diffs.append(b[idx].mean() - a[idx].mean())
    assert (low, high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    assert low < b.mean() - a.mean() < high


def test_bootstrap_is_the_same_every_time_and_uses_ten_thousand_resamples():
    rng = np.random.default_rng(2)
    a, b = rng.random(300) < 0.8, rng.random(300) < 0.8
    assert stats.BOOTSTRAP_RESAMPLES == 10_000
    assert stats.paired_bootstrap_ci(a, b) == stats.paired_bootstrap_ci(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ([0.9, 0.91, 0.905], [0.92, 0.915, 0.93, 0.925]),
    ([0.8745, 0.8897, 0.8801], [0.8799, 0.8812, 0.8850]),
    ([1.0, 2.0], [1.5, 2.5, 9.0, -3.0, 4.0]),
    ([0.5, 0.51, 0.49, 0.5, 0.52], [0.1, 0.9]),
])
def test_welch_matches_scipy(a, b):
    t, df, p = stats.welch_t_test(a, b)
    expected = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(expected.statistic, rel=1e-12)
    assert df == pytest.approx(expected.df, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_student_t_tail_matches_scipy_over_a_range():
    for df in (1.0, 2.5, 4.0, 30.0, 300.0):
        for t in (0.0, 0.3, 1.0, 2.2, 5.0, 12.0):
            expected = 2 * scipy_stats.t.sf(t, df)
            assert stats.student_t_two_sided(t, df) == pytest.approx(expected, rel=1e-9)


def test_welch_without_spread():
    assert stats.welch_t_test([0.9, 0.9], [0.9, 0.9])[2] == 1.0
    t, _, p = stats.welch_t_test([0.9, 0.9], [0.91, 0.91])
    assert p == 0.0 and math.isinf(t)
    with pytest.raises(ValueError, match="two values a side"):
        stats.welch_t_test([0.9], [0.8, 0.7])


def test_holm_by_hand():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04,
    # raised to 0.06 so that the adjusted values never fall).
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == [0.02]
