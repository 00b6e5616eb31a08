"""docs/results.md and its plot, from the zoo's records (see `zoo_measure`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnzoo.utils.format import format_seconds
from cnnzoo.zoo.catalog import accuracy_text, headline_accuracy, seed_spread
from cnnzoo.zoo.measure import BENCHMARK_URL, PUBLISHED, TRIO, machine_text
from cnnzoo.zoo.noise import noise_section, seeds_section
from cnnzoo.zoo.rules import epochs_cell, epochs_run, rule_lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _images(record: dict[str, Any]) -> str:
    train, test = record.get("train_images"), record.get("test_images")
    return "-" if train is None or test is None else f"{train:,} / {test:,}"


def _seeds_accuracy(record: dict[str, Any]) -> str:
    """The table's test accuracy: mean +- sd (points) over the record's seeds, their
    count and median, or its one number."""
    spread = seed_spread(record)
    if spread is None:
        return _pct(record["test_accuracy"])
    return f"{accuracy_text(record)} ({spread['count']} seeds, median {_pct(spread['median'])})"


def _sd(record: dict[str, Any]) -> float | None:
    spread = seed_spread(record)
    return spread["sd"] if spread else record.get("test_accuracy_sd")


def _accuracy(records: dict[str, dict[str, Any]], name: str) -> float | None:
    record = records.get(name)
    return None if record is None else headline_accuracy(record)


def _trio_section(records: dict[str, dict[str, Any]], plot: str | None) -> list[str]:
    lines = ["## MLP, locally-connected net and CNN at similar depth", ""]
    lines += [
        "The question cnnzoo started from: a fully connected network can in principle do "
        "what a CNN does, at the price of far more parameters; a locally-connected network "
        "(the CNN's windows without weight sharing) sits in between. `mlp` has three hidden "
        "fc layers; `cnn-small-local` and `cnn-small` have the same two windowed layers, "
        "pools and fc, and differ only in weight sharing.",
        "",
    ]
    present = [name for name in TRIO if name in records]
    if not present:
        return [*lines, "None of them has been measured yet.", ""]
    lines += ["| config | params | mult-adds | test accuracy | epochs |",
              "|---|---:|---:|---:|---:|"]
    for name in present:
        r = records[name]
        lines.append(f"| `{name}` | {r['params']:,} | {r['macs']:,} | "
                     f"{_pct(headline_accuracy(r))} | {epochs_cell(name, r)} |")
    lines.append("")
    cnn = records.get("cnn-small")
    if cnn is not None:
        for name in ("mlp", "cnn-small-local"):
            other = records.get(name)
            if other is None:
                continue
            ratio = other["params"] / cnn["params"]
            points = 100 * (headline_accuracy(other) - headline_accuracy(cnn))
            lines.append(f"- `{name}` has {ratio:,.1f}x the parameters of `cnn-small` and "
                         f"{other['macs'] / cnn['macs']:,.2f}x its mult-adds; its test accuracy "
                         f"is {abs(points):.2f} points {'higher' if points >= 0 else 'lower'}.")
        lines.append("")
    missing = [name for name in TRIO if name not in records]
    if missing:
        lines += [f"Not measured: {', '.join(f'`{m}`' for m in missing)}.", ""]
    if plot:
        lines += [f"![test accuracy against parameters]({plot})", "",
                  "The plot shows every measured config; the three above are joined.", ""]
    return lines


# The zoo's nets built from parallel paths and channel attention, compared at their size.
BRANCHED = ("inception-mini", "densenet-mini", "squeezenet-mini", "mobilenet-mini")


def _branched_section(records: dict[str, dict[str, Any]]) -> list[str]:
    present = [name for name in BRANCHED if name in records]
    if not present:
        return []
    lines = [
        "## Parallel paths and channel attention at about 100,000 parameters", "",
        "Four classic designs at Fashion-MNIST's size, each trained within a 300 s time "
        "budget (`train.time_budget`): Inception modules, a DenseNet-BC, SqueezeNet's fire "
        "modules and MobileNet's inverted residuals with squeeze-and-excitation. Per "
        "parameter: test accuracy points per 100,000 parameters.", "",
        "| config | params | mult-adds | test accuracy | epochs | points per 100,000 params |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    per = {name: 1e7 * headline_accuracy(records[name]) / records[name]["params"]
           for name in present}
    for name in sorted(present, key=per.__getitem__, reverse=True):
        r = records[name]
        lines.append(f"| `{name}` | {r['params']:,} | {r['macs']:,} | "
                     f"{_pct(headline_accuracy(r))} | {epochs_cell(name, r)} | "
                     f"{per[name]:.1f} |")
    best = max(present, key=per.__getitem__)
    top = max(present, key=lambda n: headline_accuracy(records[n]))
    lines += ["", f"Best per parameter: `{best}`; most accurate: `{top}`.", ""]
    return lines


def _published_section(records: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Next to the published Fashion-MNIST results", "",
        "Published numbers from the benchmark table of the Fashion-MNIST repository "
        f"([zalandoresearch/fashion-mnist]({BENCHMARK_URL}); Xiao, Rasul and Vollgraf 2017, "
        "\"Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning "
        "Algorithms\", arXiv:1708.07747). They are the submitters' own numbers, often from "
        "much longer training; the maintainers list them without re-running them.", "",
        "| published model | published test accuracy | submitted by | closest config here "
        "| measured here |",
        "|---|---:|---|---|---:|",
    ]
    best = max(records, key=lambda n: headline_accuracy(records[n]), default=None)
    for item in PUBLISHED:
        ours = next((n for n in item.closest if n in records), None)
        if not item.closest:
            ours = best
        label = "-" if ours is None else f"`{ours}`" + (" (best here)" if not item.closest else "")
        lines.append(f"| {item.model} | {item.accuracy:.2%} | {item.submitter} | {label} | "
                     f"{_pct(_accuracy(records, ours) if ours else None)} |")
    lines += ["", "CapsNet's own measurements (short CPU runs, step times, what `viz` "
              "shows) are in [capsules.md](capsules.md); fashion-best's recipe, its hour and "
              "what each part of it bought in [fashion-best.md](fashion-best.md).", ""]
    if best is not None:
        lines += _per_parameter(best, records[best])
    return lines


def _seeds_command(record: dict[str, Any]) -> str:
    """The command of seeds trained apart and added to a record (--add-seeds)."""
    command = record.get("seeds_command")
    return f"; its other seeds: `{command}`" if command else ""


def _median_note(record: dict[str, Any]) -> str:
    spread = seed_spread(record)
    return f" (the median of {spread['count']} seeds)" if spread else ""


def _whose_wall(record: dict[str, Any]) -> str:
    """What a record's wall time timed: the command, or of a seeded record its own seed's
    run (the command trained every seed)."""
    seed = record.get("seed")
    return f"seed {seed}'s run" if seed_spread(record) and seed is not None else "the whole command"


def _epochs_text(name: str, record: dict[str, Any]) -> str:
    """'10 epochs', or how far a run got and what stopped it (`EpochsRun.text`)."""
    run = epochs_run(name, record)
    return (run.text() if run else None) or f"{record['epochs']} epochs"


def _per_parameter(name: str, ours: dict[str, Any]) -> list[str]:
    """The best config here against every published row, parameter for parameter."""
    lines = [
        f"### `{name}`, the best here, per parameter", "",
        f"`{name}`: {ours['params']:,} parameters, {ours['macs']:,} mult-adds per image, "
        f"{_pct(headline_accuracy(ours))} test accuracy{_median_note(ours)} after "
        f"{_epochs_text(name, ours)}, "
        f"{format_seconds(ours['wall_seconds'])} for {_whose_wall(ours)} on {ours['machine']}. "
        "The table gives no parameter counts but CapsNet's; the others are counted from the "
        "architectures it names.", "",
        "| published model | params | counted as | params / ours | test accuracy "
        "| points per 10x the parameters |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for item in PUBLISHED:
        ratio = item.params / ours["params"]
        points = 100 * (item.accuracy - headline_accuracy(ours))
        # How much accuracy each tenfold of parameters bought over ours (log-scale slope).
        slope = "-" if abs(ratio - 1) < 0.05 else f"{points / math.log10(ratio):+.2f}"
        lines.append(f"| {item.model} | {item.params:,} | {item.params_source} | {ratio:,.2f}x "
                     f"| {_pct(item.accuracy)} ({points:+.2f}) | {slope} |")
    lines += ["", "In brackets: points above (+) or below (-) "
              f"`{name}`'s {_pct(headline_accuracy(ours))}. The last column is the slope of the "
              "line from ours to the row on a log scale of parameters: the points of accuracy "
              "that each tenfold of parameters bought (or cost, when negative).", ""]
    return lines


def _header(machine: dict[str, Any] | None, budget: str, invocation: str,
            rules: list[str]) -> list[str]:
    """The report's opening: what wrote it, the machine and budget of that run (none
    when it trained nothing), the legend and the rules that rows shared (`rule_lines`)."""
    lines = [
        "# Measured results", "",
        "Written by `scripts/zoo_results.py`; every number below comes from a `cnnzoo train` "
        "run on the real Fashion-MNIST started by that script (or by the command named for "
        "seeds added to a row), with the date and exact command of each row. The whole set "
        "is 54,000 training images (10% of the 60,000 are held out for validation) and "
        "10,000 test images, used once, at the end. This file was last written by:", "",
        f"    {invocation}", "",
        "which keeps the rows of configs it did not train (`--only`), each with its own date and "
        "command; `.venv/bin/python scripts/zoo_results.py --fresh` measures them all again.", "",
    ]
    if machine is None:
        lines.append("- That invocation trained nothing: the rows are configs/results.json's, "
                     "each with its own machine.")
    else:
        lines += [f"- Machine of this run: {machine_text(machine)}, Python {machine['python']}, "
                  f"cnnzoo {machine['cnnzoo']}", f"- Budget: {budget}"]
    return [*lines,
        "- `adapted`: a config written for another 10-class dataset, trained here on "
        "Fashion-MNIST made to fit its input (CIFAR-10's 32x32x3: zero-padded by 2 and "
        "repeated over 3 channels).",
        "- `epochs`: \"1 of 100 epochs\" where a row trained fewer epochs than its config "
        "asks (a hollow circle in the picture), \"2.46 of 100 epochs (15m budget)\" where a "
        "time budget (`train.time_budget`, the config's or the command's) stopped it first, "
        "its schedule fitted to the steps that fit (a hollow square): either is not the "
        "network's best, only what that much training gave.",
        *rules,
        "- `test accuracy`: one seed's, or for a row measured with several seeds (`--seeds`) "
        "their mean +- sd (the sample sd, in points), their count and their median. Such a "
        "row's times, date, command and shipped weights are one seed's (named in "
        "[Seeds](#seeds), which lists every seed), and where one number stands for it "
        "(the sections after the table) that number is the median; the picture puts it at "
        "the mean with an error bar of one sd. Which differences are beyond the seeds' "
        "noise: [Within noise](#within-noise), and [comparing.md](comparing.md) "
        "(`cnnzoo train --seeds`, `cnnzoo compare`).", "",
    ]


def render_markdown(records: dict[str, dict[str, Any]], order: list[str],
                    skipped: dict[str, str], machine: dict[str, Any] | None, budget: str,
                    invocation: str, plot: str | None) -> str:
    """docs/results.md from the measured records (by config name, shown in `order`);
    `machine` is None when the invocation trained nothing."""
    shown = [n for n in order if n in records] + sorted(n for n in records if n not in order)
    lines = _header(machine, budget, invocation, rule_lines(records, shown))
    if shown:
        lines += ["| config | params | mult-adds | test accuracy | epochs | train / test images "
                  "| train time | wall time | date | machine |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for name in shown:
            r = records[name]
            note = " (adapted)" if r["adapted"] else ""
            lines.append(
                f"| `{name}`{note} | {r['params']:,} | {r['macs']:,} | "
                f"{_seeds_accuracy(r)} | {epochs_cell(name, r)} | {_images(r)} | "
                f"{format_seconds(r['train_seconds'])} | {format_seconds(r['wall_seconds'])} | "
                f"{r['date']} | {r['machine']} |")
        lines += ["", "Commands:", ""]
        lines += [f"- `{name}`: `{records[name]['command']}`" + _seeds_command(records[name])
                  for name in shown]
        lines.append("")
    else:
        lines += ["Nothing has been measured yet.", ""]
    lines += seeds_section(records, shown)
    lines += noise_section(records)
    lines += _trio_section(records, plot)
    lines += _branched_section(records)
    lines += _published_section(records)
    if skipped:
        lines += ["## Not measured in this run", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
        lines.append("")
    return "\n".join(lines)


def record_points(records: dict[str, dict[str, Any]]) -> list:
    """The picture's points: every record (hollow where it trained fewer epochs than its
    config asks, square where a time budget stopped it, with an error bar where it has
    seed statistics), and the published rows."""
    from cnnzoo.utils import pictures

    points = []
    for name, r in sorted(records.items()):
        run = epochs_run(name, r)
        points.append(pictures.Point(
            name, int(r["params"]), _point_accuracy(r), name in TRIO, accuracy_sd=_sd(r),
            limited=run.text() if run else None, budgeted=bool(run and run.budget_stopped)))
    points += [pictures.Point(f"published: {item.model.split(',')[0].split(' (')[0]}", item.params,
                              item.accuracy, reference=True) for item in PUBLISHED]
    return points


def _point_accuracy(record: dict[str, Any]) -> float:
    """Where a record's point goes: its seeds' mean (the error bar is their sd), or its
    one test accuracy."""
    spread = seed_spread(record)
    return float(spread["mean"] if spread else record["test_accuracy"])


def plot_records(records: dict[str, dict[str, Any]], path: Path) -> Path | None:
    from cnnzoo.utils import pictures

    if not records:
        return None
    figure = pictures.accuracy_params_figure(
        record_points(records), "Fashion-MNIST test accuracy against parameters",
        highlight_label="MLP, locally-connected, CNN")
    return pictures.save_png(figure, path)
