"""Measuring the zoo on Fashion-MNIST: which bundled configs fit it and how they are
adapted, how many epochs a time budget allows, and the record of a finished run that
configs/results.json keeps (and `cnnzoo zoo` reads) and the `# Measured here:` line
written into the config. `scripts/zoo_results.py` drives it (see `zoo_run`).
"""

from __future__ import annotations

import os
import platform
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.config.datasets import dataset_info
from cnnzoo.config.experiment import TTA_VIEWS, ExperimentConfig, load_config
from cnnzoo.errors import CnnzooError
from cnnzoo.model.plan import Plan, plan_experiment
from cnnzoo.utils.format import format_seconds
from cnnzoo.utils.spread import mean_sd_text

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
    params: int  # the network's parameters (see `params_source`)
    params_source: str  # where `params` comes from


# From the benchmark table of the Fashion-MNIST repository (Xiao, Rasul and Vollgraf
# 2017); the maintainers list submitted results without re-running them. The table
# gives no parameter counts but CapsNet's; the others are counted from the named
# architectures with 10 outputs.
PUBLISHED = (
    Published("MLP 256-128-100", 0.8833, "@heitorrapela", ("mlp",), 247_766,
              "784-256-128-100-10 with biases"),
    Published("2 conv layers with max pooling (TensorFlow), >300 epochs", 0.916,
              "TensorFlow's layers tutorial", ("pytorch-mnist", "lenet5", "cnn-small"),
              3_274_634, "the tutorial's 5x5 convs of 32 and 64, fc 1024, fc 10"),
    Published("ResNet18, with flips, translation and rotation", 0.949, "Kyriakos Efthymiadis",
              ("resnet20", "resnet-small"), 11_175_370,
              "torchvision's ResNet18 with a 1-channel input and 10 outputs"),
    Published("WRN-28-10 + random erasing", 0.963, "Zhong et al. (Random Erasing)", (),
              36_478_906, "WRN-28-10 with a 1-channel input and 10 outputs (Zagoruyko and "
              "Komodakis 2016: 36.5 M)"),
    Published("Capsule Network 8M parameters, shifts of up to 2 pixels and flips", 0.936,
              "@XifengGuo", ("capsnet", "capsnet-small"), 8_000_000, "the row's own 8 M"),
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
    by the library's own `TrainStep` and timed by its one step timer
    (`training.budget.time_steps`), so the timer and training cannot drift apart."""
    import torch

    from cnnzoo.model.build import build_network
    from cnnzoo.model.devices import resolve_channels_last, resolve_device, resolve_precision
    from cnnzoo.training.budget import time_steps
    from cnnzoo.training.losses import create_loss
    from cnnzoo.training.optim import create_optimizer
    from cnnzoo.training.step import TrainStep

    train = config.train
    torch_device = resolve_device(device)
    precision = resolve_precision(train.precision, torch_device)
    torch.manual_seed(0)
    model = build_network(plan).to(torch_device).train()
    # The layout training will use: `auto` is a string, not a yes.
    channels_last = resolve_channels_last(train.channels_last, plan, torch_device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    train_step = TrainStep(model, create_optimizer(model, train), create_loss(train.loss).fn,
                           torch_device, precision)
    x = torch.randn(train.batch_size, *plan.input.torch_shape(), device=torch_device)
    x = x.contiguous(memory_format=memory)
    y = torch.randint(0, plan.output.depth, (train.batch_size,), device=torch_device)

    sync = torch.cuda.synchronize if torch_device.type == "cuda" else None
    # one untimed step: allocation and kernel selection
    return time_steps(lambda: train_step(x, y), steps, warmup=1, sync=sync)


@dataclass(frozen=True)
class Workload:
    """What one run of a config does, in steps and images."""

    train_images: int
    val_images: int
    test_images: int
    batch_size: int
    views: int  # forward passes per evaluated image (test-time augmentation)

    @staticmethod
    def of(config: ExperimentConfig) -> Workload:
        data = config.data
        train = min(FASHION_TRAIN, data.limit_train or FASHION_TRAIN)
        val = round(train * data.val_split)
        test = min(FASHION_TEST, data.limit_test or FASHION_TEST)
        return Workload(train - val, val, test, config.train.batch_size,
                        TTA_VIEWS[config.train.tta])

    def seconds(self, epochs: int, step_seconds: float) -> float:
        """Estimated training and evaluation time; an evaluation step is taken to cost a
        third of a training step (forward only), times the views of test-time
        augmentation."""
        steps = max(1, self.train_images // self.batch_size)
        eval_step = step_seconds / 3 * self.views
        per_epoch = steps * step_seconds + self.val_images / self.batch_size * eval_step
        return epochs * per_epoch + self.test_images / self.batch_size * eval_step


def choose_epochs(wanted: int, workload: Workload, step_seconds: float,
                  budget_seconds: float | None) -> int:
    """The most epochs, up to `wanted`, whose estimated time fits the budget (what
    remains after the test, in whole epochs: `training.budget.steps_within`)."""
    from cnnzoo.training.budget import steps_within

    if budget_seconds is None:
        return wanted
    test = workload.seconds(0, step_seconds)
    per_epoch = workload.seconds(1, step_seconds) - test
    fits = steps_within(budget_seconds, test, 0, per_epoch, wanted)
    if not fits:
        one = workload.seconds(1, step_seconds)
        raise Skip(f"one epoch would take about {format_seconds(one)} here, over the budget of "
                   f"{format_seconds(budget_seconds)} per config")
    return fits


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
    return {"cpu": cpu, "level": instruction_level(), "cores": os.cpu_count(),
            "torch": str(torch.__version__), "python": platform.python_version(),
            "cnnzoo": cnnzoo.__version__, "system": platform.system()}


def instruction_level() -> str:
    """The level that decides this CPU's training speed: AMX or AVX512_BF16 where bf16 is
    native, else the vector level (AVX512_CORE, AVX2), as the libraries are capped."""
    from cnnzoo.model.cpu import detect_bf16_support

    support = detect_bf16_support()
    return {"AMX": "AMX", "AVX512-BF16": "AVX512_BF16"}.get(support.unit or "", support.level)


def machine_text(machine: dict[str, Any]) -> str:
    """The CPU, its instruction level, cores and torch: rows from different machines
    are told apart by the first two."""
    level = f", {machine['level']}" if machine.get("level") else ""
    return f"{machine['cpu']}{level}, {machine['cores']} cores, torch {machine['torch']}"


def train_command(config_arg: str, sets: list[str], out: Path, device: str,
                  data_root: str | None, seeds: int | None = None) -> list[str]:
    """The arguments of `cnnzoo train` for one config (with `seeds`: one run per seed
    0 .. seeds-1 under `out`)."""
    args = ["train", "--config", config_arg]
    if seeds is not None:
        args += ["--seeds", str(seeds)]
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
    # A time budget may have stopped the run before its configured epochs: the record
    # says how many it ran (7.45 of 50, say), not how many it was allowed.
    ran = results.get("epochs_run")
    epochs = results["epochs"] if ran is None or ran >= results["epochs"] else round(ran, 2)
    return {
        "test_accuracy": results["test_accuracy"],
        "test_loss": results["test_loss"],
        "dataset": results["dataset"],
        "epochs": epochs,
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
        "command": " ".join([*(env or []), shlex.join(["cnnzoo", *pasteable(command)])]),
        **run_settings(results),
    }


# What results.json says of how a run was set up, kept where it says it: the report tells
# a run its budget stopped from one its epochs ended, and the rule rows shared
# (`zoo.rules`), from these rather than from today's config.
RUN_SETTINGS = ("epochs_configured", "time_budget", "precision")


def run_settings(results: dict[str, Any]) -> dict[str, Any]:
    """The epochs a run was set to, its time budget and the precision it trained in,
    those of them its results.json has."""
    return {key: results[key] for key in RUN_SETTINGS if results.get(key) is not None}


def pasteable(command: list[str]) -> list[str]:
    """The command as a user can paste it: the run directory under runs/zoo/, and no
    --data-root (where it ran here and where this machine keeps its data are incidental
    and mean nothing elsewhere)."""
    words: list[str] = []
    skip = False
    for before, word in zip(["", *command], command, strict=False):
        if skip:
            skip = False
        elif word == "--data-root":
            skip = True
        elif before == "--out":
            words.append(f"runs/zoo/{Path(word).name}")
        else:
            words.append(word)
    return words


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


def epochs_text(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _subset(record: dict[str, Any]) -> str:
    """', on N training and M test images' when a run used less than the whole set."""
    train, test = record.get("train_images"), record.get("test_images")
    full = round(FASHION_TRAIN * 0.9)
    if train in (None, full) and test in (None, FASHION_TEST):
        return ""
    return f", on {train:,} training and {test:,} test images"


def _accuracy_sentence(record: dict[str, Any]) -> str:
    """'90.81% test accuracy', or over seeds '90.81% test accuracy with seed 0 (3 seeds:
    90.80% +- 0.15, median 90.81%)': the times that follow are that one seed's."""
    from cnnzoo.zoo.catalog import seed_spread

    text = f"{record['test_accuracy']:.2%} test accuracy"
    spread = seed_spread(record)
    seed = record.get("seed")
    if spread is None or seed is None:
        return text
    return (f"{text} with seed {seed} ({spread['count']} seeds: {mean_sd_text(spread)}, "
            f"median {spread['median']:.2%})")


def measured_lines(record: dict[str, Any], width: int = 88) -> list[str]:
    """The `# Measured here:` comment of a config, wrapped; the command on a line
    of its own so that it can be copied whole."""
    adapted = " (adapted: " + ", ".join(record["adapted"]) + ")" if record["adapted"] else ""
    text = (
        f"{_accuracy_sentence(record)} on Fashion-MNIST{adapted}{_subset(record)} "
        f"after {epochs_text(record['epochs'])} ({format_seconds(record['train_seconds'])} of "
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
