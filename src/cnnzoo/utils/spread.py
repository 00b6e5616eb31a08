"""The mean and spread of a few repeated measurements, such as one config's test
accuracy over several seeds; no numpy, so that `cnnzoo zoo` stays light."""

from __future__ import annotations

import math


def statistics(values: list[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (n - 1 in the denominator: the seeds are a sample
    of the seeds one could have drawn; None for one value), min and max."""
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def mean_sd_text(stats: dict[str, float | None]) -> str:
    """An accuracy's mean +- sd in points ('91.20% +- 0.15'), or the one value."""
    if stats["sd"] is None:
        return f"{stats['mean']:.2%}"
    return f"{stats['mean']:.2%} +- {100 * stats['sd']:.2f}"
