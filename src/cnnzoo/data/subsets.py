"""Seeded subsets that keep a dataset's class proportions: `data.limit_train`,
`data.limit_test`, the validation split and a folder dataset's test split.

Each class gets its share of the subset by the largest-remainder method (its
proportion times the subset's size, rounded down, and the images left over go to
the classes with the largest fractions), and its images are drawn from a seeded
permutation of that class. Indices come back sorted, in the dataset's own order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LIMIT_TEST_SEED = 0  # the same test images for every run, whatever its train.seed


def class_shares(counts: Sequence[int], n: int) -> list[int]:
    """How many of `n` picks each class gets, proportional to `counts` (summing to n)."""
    total = sum(counts)
    exact = [n * c / total for c in counts] if total else [0.0] * len(counts)
    shares = [int(e) for e in exact]
    left = n - sum(shares)
    # Largest fraction first; ties to the larger class, then the lower label.
    order = sorted(range(len(counts)), key=lambda k: (shares[k] - exact[k], -counts[k], k))
    for k in order[:left]:
        shares[k] += 1
    return shares


def stratified_pick(labels: Sequence[int] | np.ndarray, n: int, seed: int) -> list[int]:
    """Sorted indices of `n` items (all of them if n >= len) in the classes' proportions."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return list(range(len(labels)))
    classes, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(classes))]
    shares = class_shares([len(m) for m in members], n)
    rng = np.random.default_rng(seed)
    picked = [m[rng.permutation(len(m))[:share]] for m, share in zip(members, shares,
                                                                        strict=True)]
    return sorted(int(i) for i in np.concatenate(picked)) if picked else []


def stratified_split(labels: Sequence[int] | np.ndarray, n_first: int,
                     seed: int) -> tuple[list[int], list[int]]:
    """Two sorted index lists: `n_first` items in the classes' proportions, and the rest."""
    first = stratified_pick(labels, n_first, seed)
    chosen = set(first)
    return first, [i for i in range(len(labels)) if i not in chosen]
