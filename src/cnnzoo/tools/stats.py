"""The statistics `cnnzoo compare` uses to say whether one classifier beats another.

- McNemar's exact test: on one test set, only the images that exactly one of the two
  got right say anything; under "no difference" each such image is a fair coin, so the
  p-value is a two-sided binomial test on the two discordant counts.
- A paired bootstrap: resample the test images with replacement (the same images for
  both classifiers) and take the percentile interval of the accuracy difference.
- Welch's t-test: the seeds' accuracies of two configs, without assuming equal spread.
- Holm's step-down correction, for one best run compared with several others.

Written with the standard library and numpy alone (no scipy at run time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: `only_a` images that
    A alone got right, `only_b` that B alone did. It is the binomial test of
    min(only_a, only_b) successes in only_a + only_b fair-coin trials, doubled (the
    binomial with p = 1/2 is symmetric), at most 1; 1 when nothing is discordant."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts cannot be negative. Received: {only_a}, {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0 or only_a == only_b:
        return 1.0
    # Exact integers: C(n, i) grows past any float long before n = 10,000 images.
    term, tail = 1, 1
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))


def discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(images only A got right, images only B got right) of two paired bool vectors."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors must have one shape. Received: {a.shape}, {b.shape}")
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(b & ~a))


def paired_bootstrap_ci(score_a: np.ndarray, score_b: np.ndarray, *,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of mean(score_b) - mean(score_a) over `resamples`
    resamples of the images (per-image scores: 1 right, 0 wrong, or a fraction of seeds
    right). Resample r draws its indices with `rng.integers(0, n, n)` from
    `np.random.default_rng(seed)`, so the interval is the same on every run."""
    a, b = np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores must be two vectors of one length. Received: "
                         f"{a.shape}, {b.shape}")
    difference = b - a
    n = len(difference)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for r in range(resamples):
        means[r] = difference[rng.integers(0, n, n)].mean()
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, degrees of freedom, two-sided p) of Welch's test of mean(b) - mean(a). Two
    samples without spread: p is 1 if their means are equal, else 0."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs two values a side. Received: {len(a)}, {len(b)}")
    mean_a, mean_b = math.fsum(a) / len(a), math.fsum(b) / len(b)
    var_a = math.fsum((x - mean_a) ** 2 for x in a) / (len(a) - 1) / len(a)
    var_b = math.fsum((x - mean_b) ** 2 for x in b) / (len(b) - 1) / len(b)
    spread = var_a + var_b
    if spread == 0:
        same = mean_a == mean_b
        return (math.nan if same else math.copysign(math.inf, mean_b - mean_a),
                math.nan, 1.0 if same else 0.0)
    t = (mean_b - mean_a) / math.sqrt(spread)
    df = spread**2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    return t, df, student_t_two_sided(t, df)


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: the regularised
    incomplete beta I_x(df/2, 1/2) at x = df / (df + t^2)."""
    return min(1.0, regularized_beta(df / (df + t * t), df / 2, 0.5))


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), by the continued fraction (Lentz's method), taken on the side of
    x where it converges fast."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the order given: the i-th smallest of m is
    multiplied by m - i (i from 0), made non-decreasing, and capped at 1. Reject where
    the adjusted value is below the level."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
