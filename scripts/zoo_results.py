"""Measure the zoo: train every bundled config that fits Fashion-MNIST on this
machine, within a time budget per config, and write down what happened.

    .venv/bin/python scripts/zoo_results.py                         # all, 10 min each
    .venv/bin/python scripts/zoo_results.py --only lenet5 mlp --budget-minutes 5
    .venv/bin/python scripts/zoo_results.py --epochs 1 --set data.limit_train=2000 \\
        --results /tmp/zoo/results.md --configs-dir /tmp/zoo/configs   # a smoke run

It writes
    docs/results.md               params, mult-adds, test accuracy, train and wall time,
                                  date and the exact command of every config; the MLP vs
                                  locally-connected vs CNN comparison; the published
                                  Fashion-MNIST benchmark next to these numbers
    docs/accuracy-vs-params.png   test accuracy against parameters (log scale)
    configs/results.json          what `cnnzoo zoo` shows
    configs/NAME.yaml             the `# Measured here:` line of every config trained

Every number comes from a `cnnzoo train` run that this script started. Configs not
trained this time keep the record of their earlier run in configs/results.json,
with its own date, machine and command (--fresh drops those). The records are
written after every config, so an interrupted measurement keeps what it finished;
`--reuse` then takes a finished run in --runs whose config is the one it would
train, instead of training it again.

A config for another 10-class dataset is adapted with --set overrides that turn
Fashion-MNIST's 28x28x1 images into its input (CIFAR's 32x32x3: data.pad=2,
data.channels=3). The budget caps the epochs: a few steps are timed first, and a
config whose single epoch would not fit is listed as not measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.compare import format_seconds
from cnnzoo.config import ExperimentConfig, load_config
from cnnzoo.data.catalog import dataset_info
from cnnzoo.errors import CnnzooError
from cnnzoo.plan import Plan, plan_experiment

ROOT = Path(__file__).resolve().parents[1]

FASHION = "fashion_mnist"
FASHION_TRAIN, FASHION_TEST = 60_000, 10_000
MEASURED = "# Measured here:"
CONTINUED = "#   "
PLOT = "accuracy-vs-params.png"

# The founding comparison: a network without local connectivity or sharing, one
# with local connectivity only, and one with both, at similar depth.
TRIO = ("mlp", "cnn-small-local", "cnn-small")

BENCHMARK_URL = "https://github.com/zalandoresearch/fashion-mnist#benchmark"


@dataclass(frozen=True)
class Published:
    model: str
    accuracy: float
    submitter: str
    closest: tuple[str, ...]  # configs here to set beside it, the first measured one wins


# From the benchmark table of the Fashion-MNIST repository (Xiao, Rasul and Vollgraf
# 2017); the maintainers list submitted results without re-running them.
PUBLISHED = (
    Published("MLP 256-128-100", 0.8833, "@heitorrapela", ("mlp",)),
    Published("2 conv layers with max pooling (TensorFlow), >300 epochs", 0.916,
              "TensorFlow's layers tutorial", ("pytorch-mnist", "lenet5", "cnn-small")),
    Published("ResNet18, with flips, translation and rotation", 0.949, "Kyriakos Efthymiadis",
              ("resnet20", "resnet-small")),
    Published("WRN-28-10 + random erasing", 0.963, "Zhong et al. (Random Erasing)", ()),
)


class Skip(Exception):
    """A config this run does not train, and why."""


# ---- which configs, adapted how


def fashion_overrides(config: ExperimentConfig, plan: Plan) -> list[str]:
    """`--set` overrides that train `config` on Fashion-MNIST with its own input volume."""
    data = config.data
    if data.dataset == FASHION:
        return []
    if data.dataset is None:
        raise Skip("it names no dataset")
    info = dataset_info(data.dataset)
    if info.layout in ("fake", "folder"):
        raise Skip(f"it trains on {data.dataset} data")
    if info.num_classes != 10:
        raise Skip(f"{data.dataset} has {info.num_classes} classes, Fashion-MNIST 10")
    target = plan.input
    sets = [f"data.dataset={FASHION}"]
    grow_h, grow_w = target.height - 28, target.width - 28
    if grow_h == grow_w and grow_h >= 0 and grow_h % 2 == 0:
        if data.pad != grow_h // 2:
            sets.append(f"data.pad={grow_h // 2}")
        if data.resize is not None:
            sets.append("data.resize=null")
    else:
        sets.append(f"data.resize=[{target.height},{target.width}]")
        if data.pad:
            sets.append("data.pad=0")
    if (data.channels or 1) != target.depth:
        sets.append(f"data.channels={target.depth}")
    if data.mean is not None or data.std is not None:
        sets += ["data.mean=null", "data.std=null"]  # the other dataset's statistics
    return sets


@dataclass(frozen=True)
class Adapted:
    """A config as it will train here."""

    config: ExperimentConfig
    plan: Plan
    adaptation: list[str]  # the overrides that fit it to Fashion-MNIST
    sets: list[str]  # all overrides, the user's after the adaptation


def adapted_config(path: Path, user_sets: list[str]) -> Adapted:
    config = load_config(path)
    adaptation = fashion_overrides(config, plan_experiment(config))
    sets = adaptation + list(user_sets)
    try:
        adapted = load_config(path, sets)
        return Adapted(adapted, plan_experiment(adapted), adaptation, sets)
    except CnnzooError as exc:
        raise Skip(f"cannot be trained on Fashion-MNIST with {' '.join(sets)}: {exc}") from None


# ---- the budget


def measure_step_seconds(config: ExperimentConfig, plan: Plan, device: str,
                         steps: int = 2) -> float:
    """Seconds of one training step (forward, backward, update) on random images, made
    by the library's own `TrainStep`, so the timer and training cannot drift apart."""
    import torch

    from cnnzoo.build import build_model
    from cnnzoo.losses import create_loss
    from cnnzoo.training.devices import resolve_channels_last, resolve_device, resolve_precision
    from cnnzoo.training.optim import create_optimizer
    from cnnzoo.training.trainer import TrainStep

    train = config.train
    torch_device = resolve_device(device)
    precision = resolve_precision(train.precision, torch_device)
    torch.manual_seed(0)
    model = build_model(plan).to(torch_device).train()
    # The layout training will use: `auto` is a string, not a yes.
    channels_last = resolve_channels_last(train.channels_last, plan, torch_device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    train_step = TrainStep(model, create_optimizer(model, train), create_loss(train.loss).fn,
                           torch_device, precision)
    x = torch.randn(train.batch_size, *plan.input.torch_shape(), device=torch_device)
    x = x.contiguous(memory_format=memory)
    y = torch.randint(0, plan.output.depth, (train.batch_size,), device=torch_device)

    def step() -> None:
        train_step(x, y)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()

    step()  # allocation and kernel selection
    tick = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - tick) / steps


@dataclass(frozen=True)
class Workload:
    """What one run of a config does, in steps and images."""

    train_images: int
    val_images: int
    test_images: int
    batch_size: int
    tta: bool

    @staticmethod
    def of(config: ExperimentConfig) -> Workload:
        data = config.data
        train = min(FASHION_TRAIN, data.limit_train or FASHION_TRAIN)
        val = round(train * data.val_split)
        test = min(FASHION_TEST, data.limit_test or FASHION_TEST)
        return Workload(train - val, val, test, config.train.batch_size,
                        config.train.tta == "flip")

    def seconds(self, epochs: int, step_seconds: float) -> float:
        """Estimated training and evaluation time; an evaluation step is taken to cost a
        third of a training step (forward only), twice that with flip TTA."""
        steps = max(1, self.train_images // self.batch_size)
        eval_step = step_seconds / 3 * (2 if self.tta else 1)
        per_epoch = steps * step_seconds + self.val_images / self.batch_size * eval_step
        return epochs * per_epoch + self.test_images / self.batch_size * eval_step


def choose_epochs(wanted: int, workload: Workload, step_seconds: float,
                  budget_seconds: float | None) -> int:
    """The most epochs, up to `wanted`, whose estimated time fits the budget."""
    if budget_seconds is None:
        return wanted
    fits = [e for e in range(1, wanted + 1) if workload.seconds(e, step_seconds) <= budget_seconds]
    if not fits:
        one = workload.seconds(1, step_seconds)
        raise Skip(f"one epoch would take about {format_seconds(one)} here, over the budget of "
                   f"{format_seconds(budget_seconds)} per config")
    return fits[-1]


# ---- the machine and the records


def machine_info() -> dict[str, Any]:
    import torch

    import cnnzoo

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": str(torch.__version__),
            "python": platform.python_version(), "cnnzoo": cnnzoo.__version__,
            "system": platform.system()}


def machine_text(machine: dict[str, Any]) -> str:
    return f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}"


def train_command(config_arg: str, sets: list[str], out: Path, device: str,
                  data_root: str | None) -> list[str]:
    """The arguments of `cnnzoo train` for one config."""
    args = ["train", "--config", config_arg]
    for text in sets:
        args += ["--set", text]
    args += ["--device", device, "--out", str(out)]
    if data_root:
        args += ["--data-root", data_root]
    return args


def finished_run(out: Path, config: ExperimentConfig) -> bool:
    """Whether `out` holds a finished run of exactly `config` (devices and other settings
    a resume may change aside)."""
    from cnnzoo.training.state import config_differences

    if not (out / "results.json").exists() or not (out / "config.yaml").exists():
        return False
    try:
        return not config_differences(load_config(out / "config.yaml"), config)
    except CnnzooError:
        return False


def make_record(results: dict[str, Any], info: dict[str, Any], command: list[str],
                adaptation: list[str], wall_seconds: float, machine: dict[str, Any], date: str,
                env: list[str] | None = None) -> dict[str, Any]:
    """What results.json keeps of one run: `results` and `info` are the run's
    results.json and run.json."""
    return {
        "test_accuracy": results["test_accuracy"],
        "test_loss": results["test_loss"],
        "dataset": results["dataset"],
        "epochs": results["epochs"],
        "train_images": info["train_samples"],
        "test_images": results["test_samples"],
        "train_seconds": round(results["train_seconds"], 1),
        "wall_seconds": round(wall_seconds, 1),
        "params": results["params"],
        "macs": results["macs"],
        "device": results["device"],
        "machine": machine_text(machine),
        "date": date,
        "adapted": list(adaptation),
        "command": " ".join([*(env or []), shlex.join(["cnnzoo", *command])]),
    }


# ---- the config's comment line


def command_without_out(command: str) -> str:
    """The command of a record as a config's comment gives it: the run directory is
    incidental, so --out and its value go."""
    words = shlex.split(command)
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--out":
            skip = True
            continue
        kept.append(word)
    return shlex.join(kept)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _subset(record: dict[str, Any]) -> str:
    """', on N training and M test images' when a run used less than the whole set."""
    train, test = record.get("train_images"), record.get("test_images")
    full = round(FASHION_TRAIN * 0.9)
    if train in (None, full) and test in (None, FASHION_TEST):
        return ""
    return f", on {train:,} training and {test:,} test images"


def measured_lines(record: dict[str, Any], width: int = 88) -> list[str]:
    """The `# Measured here:` comment of a config, wrapped; the command on a line
    of its own so that it can be copied whole."""
    adapted = " (adapted: " + ", ".join(record["adapted"]) + ")" if record["adapted"] else ""
    text = (
        f"{record['test_accuracy']:.2%} test accuracy on Fashion-MNIST{adapted}{_subset(record)} "
        f"after {_epochs(record['epochs'])} ({format_seconds(record['train_seconds'])} of "
        f"training on {record['machine']}; {record['date']}):"
    )
    lines = textwrap.wrap(text, width=width, initial_indent=f"{MEASURED} ",
                          subsequent_indent=CONTINUED, break_on_hyphens=False)
    return [*lines, CONTINUED + command_without_out(record["command"])]


def rewrite_measured(text: str, lines: list[str]) -> str:
    """`text` (a config) with its `# Measured here:` line and the continuation lines
    after it replaced by `lines`; without one, `lines` go at the end of the leading
    comment block."""
    source = text.splitlines(keepends=True)
    new = [line + "\n" for line in lines]
    start = next((i for i, line in enumerate(source) if line.startswith(MEASURED)), None)
    if start is None:
        end_of_header = next((i for i, line in enumerate(source) if not line.startswith("#")),
                             len(source))
        return "".join(source[:end_of_header] + new + source[end_of_header:])
    end = start + 1
    while end < len(source) and source[end].startswith(CONTINUED):
        end += 1
    return "".join(source[:start] + new + source[end:])


# ---- docs/results.md


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _images(record: dict[str, Any]) -> str:
    train, test = record.get("train_images"), record.get("test_images")
    return "-" if train is None or test is None else f"{train:,} / {test:,}"


def _accuracy(records: dict[str, dict[str, Any]], name: str) -> float | None:
    record = records.get(name)
    return None if record is None else float(record["test_accuracy"])


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
                     f"{_pct(r['test_accuracy'])} | {r['epochs']} |")
    lines.append("")
    cnn = records.get("cnn-small")
    if cnn is not None:
        for name in ("mlp", "cnn-small-local"):
            other = records.get(name)
            if other is None:
                continue
            ratio = other["params"] / cnn["params"]
            points = 100 * (other["test_accuracy"] - cnn["test_accuracy"])
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
    best = max(records, key=lambda n: records[n]["test_accuracy"], default=None)
    for item in PUBLISHED:
        ours = next((n for n in item.closest if n in records), None)
        if not item.closest:
            ours = best
        label = "-" if ours is None else f"`{ours}`" + (" (best here)" if not item.closest else "")
        lines.append(f"| {item.model} | {item.accuracy:.2%} | {item.submitter} | {label} | "
                     f"{_pct(_accuracy(records, ours) if ours else None)} |")
    return [*lines, ""]


def render_markdown(records: dict[str, dict[str, Any]], order: list[str],
                    skipped: dict[str, str], machine: dict[str, Any], budget: str,
                    invocation: str, plot: str | None) -> str:
    """docs/results.md from the measured records (by config name, shown in `order`)."""
    lines = [
        "# Measured results", "",
        "Written by `scripts/zoo_results.py`; every number below comes from a `cnnzoo train` "
        "run on the real Fashion-MNIST started by that script, with the date and exact command "
        "of each row. The whole set is 54,000 training images (10% of the 60,000 are held out "
        "for validation) and 10,000 test images, used once, at the end. This file was last "
        "written by:", "",
        f"    {invocation}", "",
        "which keeps the rows of configs it did not train (`--only`), each with its own date and "
        "command; `.venv/bin/python scripts/zoo_results.py --fresh` measures them all again.", "",
        f"- Machine of this run: {machine_text(machine)}, Python {machine['python']}, "
        f"cnnzoo {machine['cnnzoo']}",
        f"- Budget: {budget}",
        "- `adapted`: a config written for another 10-class dataset, trained here on "
        "Fashion-MNIST made to fit its input (CIFAR-10's 32x32x3: zero-padded by 2 and "
        "repeated over 3 channels).", "",
    ]
    shown = [n for n in order if n in records] + sorted(n for n in records if n not in order)
    if shown:
        lines += ["| config | params | mult-adds | test accuracy | epochs | train / test images "
                  "| train time | wall time | date | machine |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for name in shown:
            r = records[name]
            note = " (adapted)" if r["adapted"] else ""
            lines.append(
                f"| `{name}`{note} | {r['params']:,} | {r['macs']:,} | "
                f"{_pct(r['test_accuracy'])} | {r['epochs']} | {_images(r)} | "
                f"{format_seconds(r['train_seconds'])} | {format_seconds(r['wall_seconds'])} | "
                f"{r['date']} | {r['machine']} |")
        lines += ["", "Commands:", ""]
        lines += [f"- `{name}`: `{records[name]['command']}`" for name in shown]
        lines.append("")
    else:
        lines += ["Nothing has been measured yet.", ""]
    lines += _trio_section(records, plot)
    lines += _published_section(records)
    if skipped:
        lines += ["## Not measured in this run", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
        lines.append("")
    return "\n".join(lines)


def plot_records(records: dict[str, dict[str, Any]], path: Path) -> Path | None:
    from cnnzoo import pictures

    points = [pictures.Point(name, int(r["params"]), float(r["test_accuracy"]), name in TRIO)
              for name, r in sorted(records.items())]
    if not points:
        return None
    figure = pictures.accuracy_params_figure(
        points, "Fashion-MNIST test accuracy against parameters",
        highlight_label="MLP, locally-connected, CNN")
    return pictures.save_png(figure, path)


# ---- the run


@dataclass
class Options:
    only: list[str]
    budget_minutes: float
    epochs: int | None
    sets: list[str]
    device: str
    runs: Path
    results: Path
    configs_dir: Path
    update_configs: bool
    fresh: bool
    reuse: bool
    data_root: str | None
    threads: int | None
    argv: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help="train these configs only")
    parser.add_argument("--budget-minutes", type=float, default=10.0,
                        help="training time per config; epochs are capped to fit (0: no cap)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs instead of each config's own")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every config, as cnnzoo train --set (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu (the default), cuda, ...")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the run directories go (default runs/zoo-TIME)")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md",
                        help="the markdown report; its plot is written next to it")
    parser.add_argument("--configs-dir", type=Path, default=ROOT / "configs",
                        help="the configs to train; results.json and the comment lines are "
                        "written here")
    parser.add_argument("--no-update-configs", dest="update_configs", action="store_false",
                        help="write neither results.json nor the configs' comment lines")
    parser.add_argument("--fresh", action="store_true",
                        help="forget the records of earlier runs in results.json")
    parser.add_argument("--reuse", action="store_true",
                        help="record a finished run in --runs of the same config instead of "
                        "training it again (after an interrupted measurement)")
    parser.add_argument("--data-root", default=None, help="look for the dataset here first")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per training (OMP_NUM_THREADS); on a machine busy "
                        "with other work, 1 avoids threads waiting for each other")
    args = parser.parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Options(args.only, args.budget_minutes, args.epochs, args.sets, args.device,
                   args.runs or Path("runs") / f"zoo-{stamp}", args.results, args.configs_dir,
                   args.update_configs, args.fresh, args.reuse, args.data_root, args.threads, argv)


def _config_arg(path: Path) -> str:
    """A bundled config by name (as users type it), any other by path."""
    from cnnzoo.config import bundled_configs

    return path.stem if bundled_configs().get(path.stem) == path.resolve() else str(path)


def write_outputs(options: Options, records: dict[str, dict[str, Any]], configs: dict[str, Path],
                  skipped: dict[str, str], machine: dict[str, Any], budget: float | None,
                  trained: list[str]) -> None:
    """docs/results.md, its plot, configs/results.json and the comment lines of the
    configs in `trained`, from what is measured so far."""
    from cnnzoo.files import atomic_write_text
    from cnnzoo.zoo import write_measured

    results_path = options.results
    results_path.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_records(records, results_path.parent / PLOT)
    budget_text = (f"{format_seconds(budget)} of estimated training time per config; epochs "
                   "are capped to fit" if budget else "none; every config trains its own epochs")
    invocation = shlex.join([".venv/bin/python", "scripts/zoo_results.py", *options.argv])
    markdown = render_markdown(records, list(configs), skipped, machine, budget_text, invocation,
                               plot.name if plot else None)
    atomic_write_text(results_path, markdown)
    if options.update_configs:
        write_measured(records, options.configs_dir)
        for name in trained:
            path = configs[name]
            atomic_write_text(path, rewrite_measured(path.read_text(),
                                                     measured_lines(records[name])))


def main(argv: list[str] | None = None) -> int:
    from cnnzoo.zoo import read_measured

    options = parse_args(sys.argv[1:] if argv is None else argv)
    configs = {p.stem: p.resolve() for p in sorted(options.configs_dir.glob("*.yaml"))}
    unknown = [n for n in options.only if n not in configs]
    if unknown:
        print(f"error: no config {', '.join(unknown)} in {options.configs_dir}", file=sys.stderr)
        return 2
    names = options.only or list(configs)
    budget = options.budget_minutes * 60 if options.budget_minutes > 0 else None
    machine = machine_info()
    date = dt.date.today().isoformat()
    records = {} if options.fresh else dict(read_measured(options.configs_dir))
    env = dict(os.environ)
    prefix: list[str] = []
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
        env["OMP_NUM_THREADS"] = str(options.threads)
        prefix = [f"OMP_NUM_THREADS={options.threads}"]
    skipped: dict[str, str] = {}
    trained: list[str] = []
    failed = False
    user_sets = [*options.sets, *([f"train.epochs={options.epochs}"] if options.epochs else [])]
    for name in names:
        try:
            adapted = adapted_config(configs[name], user_sets)
            config = adapted.config
            step = measure_step_seconds(config, adapted.plan, options.device)
            epochs = choose_epochs(config.train.epochs, Workload.of(config), step, budget)
        except Skip as exc:
            skipped[name] = str(exc)
            print(f"--- {name}: not measured: {exc}", flush=True)
            continue
        sets = adapted.sets
        if epochs != config.train.epochs:
            sets = [s for s in sets if not s.startswith("train.epochs=")]
            sets.append(f"train.epochs={epochs}")
        out = options.runs / name
        command = train_command(_config_arg(configs[name]), sets, out, options.device,
                                options.data_root)
        if options.reuse and finished_run(out, load_config(configs[name], sets)):
            results = json.loads((out / "results.json").read_text())
            wall = float(results["wall_seconds"])  # measured inside the command
            run_date = str(results.get("finished", date))[:10]
            print(f"--- {name}: reusing the finished run in {out}", flush=True)
        else:
            if out.exists() and options.reuse:
                import shutil

                shutil.rmtree(out)  # an unfinished or different run: train it again
            estimate = Workload.of(config).seconds(epochs, step)
            print(f"--- {name}: {_epochs(epochs)}, about {format_seconds(estimate)}: "
                  f"cnnzoo {shlex.join(command)}", flush=True)
            tick = time.perf_counter()
            code = subprocess.call([sys.executable, "-m", "cnnzoo", *command], env=env)
            wall = time.perf_counter() - tick
            if code != 0 or not (out / "results.json").exists():
                skipped[name] = f"training failed (exit code {code}); see {out}"
                print(f"--- {name}: training failed (exit code {code})", flush=True)
                failed = True
                continue
            results = json.loads((out / "results.json").read_text())
            run_date = date
        info = json.loads((out / "run.json").read_text())
        records[name] = make_record(results, info, command, adapted.adaptation, wall, machine,
                                    run_date, prefix)
        trained.append(name)
        write_outputs(options, records, configs, skipped, machine, budget, trained)
    write_outputs(options, records, configs, skipped, machine, budget, trained)
    print(f"wrote {options.results}" + (f", {options.configs_dir / 'results.json'} and the "
                                        f"'{MEASURED}' lines of {len(trained)} configs"
                                        if options.update_configs else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
