"""docs/results.md's two sections on seeds: every seed of the records measured with
several, and which of the zoo's differences are within the seeds' noise.

A difference is tested between each config with two or more seeds and the next better
one by mean, with Welch's t-test over the seeds' test accuracies: what `cnnzoo compare`
decides by between `--seeds` parents, at its level (0.05). A record of one seed is
not tested, since its seed's noise is unknown.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from cnnzoo.tools.paired import ALPHA, p_text
from cnnzoo.tools.stats import welch_t_test
from cnnzoo.utils.format import format_seconds
from cnnzoo.zoo.catalog import accuracy_text, seed_spread


def seed_accuracies(record: dict[str, Any]) -> list[float] | None:
    """The test accuracy of each of a record's seeds, or None with fewer than two."""
    if seed_spread(record) is None:
        return None
    return [float(entry["test_accuracy"]) for entry in record["seeds"]]


@dataclass(frozen=True)
class NoiseTest:
    """One config with seeds against the next better one."""

    name: str
    better: str | None  # the next better config by mean; None for the best
    behind: float | None  # mean(better) - mean(this), in points
    p: float | None  # Welch's two-sided p over the two sets of seeds

    @property
    def verdict(self) -> str:
        if self.p is None:
            return "best of the configs with seeds"
        side = "within" if self.p >= ALPHA else "beyond"
        return f"{side} noise (p = {p_text(self.p)})"


def noise_tests(records: dict[str, dict[str, Any]]) -> list[NoiseTest]:
    """The configs with two or more seeds, best mean first, each tested against the one
    before it."""
    seeded = {name: values for name, r in records.items()
              if (values := seed_accuracies(r)) is not None}
    means = {name: math.fsum(v) / len(v) for name, v in seeded.items()}
    order = sorted(seeded, key=lambda name: (-means[name], name))
    tests = [NoiseTest(order[0], None, None, None)] if order else []
    for better, name in itertools.pairwise(order):
        _, _, p = welch_t_test(seeded[name], seeded[better])
        tests.append(NoiseTest(name, better, 100 * (means[better] - means[name]), p))
    return tests


def noise_section(records: dict[str, dict[str, Any]]) -> list[str]:
    """'Within noise': each config with seeds against the next better one."""
    if not records:
        return []
    lines = [
        "## Within noise", "",
        "Is a row better than the next one, or is that the seed's noise? The configs "
        "measured with two or more seeds, best mean first, each against the next better "
        "one: Welch's t-test over the two sets of seeds' test accuracies (two-sided, "
        "without assuming equal spread; what `cnnzoo compare` decides by between `--seeds` "
        f"parents). Beyond noise where p < {ALPHA:g}; each line is one test, not corrected "
        "for the others. A row of one seed is not tested: its seed's noise is unknown.", "",
    ]
    tests = noise_tests(records)
    if len(tests) >= 2:
        lines += ["| config | test accuracy | next better | behind it by | verdict |",
                  "|---|---:|---|---:|---|"]
        for test in tests:
            better = "-" if test.better is None else f"`{test.better}`"
            behind = "-" if test.behind is None else f"{test.behind:.2f} points"
            lines.append(f"| `{test.name}` | {accuracy_text(records[test.name])} | {better} | "
                         f"{behind} | {test.verdict} |")
        lines.append("")
    else:
        lines += ["Fewer than two configs have seeds recorded: nothing is tested yet.", ""]
    single = sorted(set(records) - {test.name for test in tests})
    if single:
        lines += ["One seed, not tested: " + ", ".join(f"`{name}`" for name in single) + ".", ""]
    return lines


def seeds_section(records: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    """'Seeds': each record with seeds, seed by seed, in the table's order."""
    seeded = [name for name in order if seed_spread(records[name]) is not None]
    if not seeded:
        return []
    lines = [
        "## Seeds", "",
        "The rows measured with several seeds, seed by seed: each seed's test accuracy and "
        "wall time as its own run measured them, their median and mean +- sd, and the seed "
        "whose run gives the row's times, date and shipped weights.", "",
        "| config | seeds | test accuracy by seed | median | mean +- sd | wall time by seed "
        "| row and weights from |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name in seeded:
        record = records[name]
        entries = sorted(record["seeds"], key=lambda e: e["seed"])
        spread = seed_spread(record) or {}
        seeds = ", ".join(str(e["seed"]) for e in entries)
        accuracies = ", ".join(f"{float(e['test_accuracy']):.2%}" for e in entries)
        walls = ", ".join(format_seconds(float(e["wall_seconds"])) if "wall_seconds" in e
                          else "-" for e in entries)
        lines.append(f"| `{name}` | {seeds} | {accuracies} | {spread['median']:.2%} | "
                     f"{accuracy_text(record)} | {walls} | {_from_text(record)} |")
    return [*lines, ""]


def _from_text(record: dict[str, Any]) -> str:
    seed = record.get("seed")
    seed_text = "-" if seed is None else f"seed {seed}"
    return seed_text + (", weights shipped" if record.get("pretrained") else "")
