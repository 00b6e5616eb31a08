"""Timing cnnzoo against hand-written PyTorch: the pieces scripts/bench.py prints.
Each pair is timed interleaved (A, B, A, B, ...) so that a slow moment of a shared
machine hits both; see the script for the sections and their targets."""

from __future__ import annotations

import contextlib
import gzip
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnzoo.config.experiment import ExperimentConfig, load_config, with_overrides
from cnnzoo.data.pipeline import load_dataset
from cnnzoo.measure.reference_nets import LeNet5, SpeedrunNet
from cnnzoo.model.devices import (
    autocast,
    resolve_channels_last,
    resolve_precision,
)
from cnnzoo.model.plan import Plan, plan_experiment
from cnnzoo.runs.pretrained import build_model
from cnnzoo.training.budget import time_steps
from cnnzoo.training.optim import create_optimizer
from cnnzoo.training.trainer import fit

FASHION = Path("/usr/share/datasets/fashion-mnist")


def sync(device: torch.device) -> None:
    """Wait for the device: GPU work is queued, and a timer must see it done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
REFERENCES = {"lenet5": LeNet5, "fashion-speedrun": SpeedrunNet}


def interleaved(a: Callable[[], float], b: Callable[[], float], repeats: int) -> list[float]:
    """Ratios a()/b() of `repeats` interleaved measurements (each returns seconds or a rate)."""
    ratios = []
    for _ in range(repeats):
        ratios.append(a() / b())
    return ratios


def step_timer(model: torch.nn.Module, config: ExperimentConfig, batch: int,
               steps: int, device: torch.device) -> Callable[[], float]:
    """Seconds for `steps` training steps of `model` on one fixed batch, each call timed
    by the library's one step timer (`training.budget.time_steps`)."""
    train = config.train
    plan = plan_experiment(config)
    channels_last = resolve_channels_last(train.channels_last, plan, device)
    precision = resolve_precision(train.precision, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, train)
    x = torch.randn(batch, *plan.input.torch_shape(), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, plan.output.depth, (batch,), device=device)

    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    time_steps(step, 0, warmup=3, sync=lambda: sync(device))
    return lambda: steps * time_steps(step, steps, sync=lambda: sync(device))


def bench_builder(name: str, repeats: int, steps: int, device: torch.device) -> dict:
    config = load_config(name)
    batch = config.train.batch_size
    torch.manual_seed(0)
    ours = build_model(config)
    theirs = REFERENCES[name]()
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in theirs.parameters()
    )
    ratios = interleaved(step_timer(ours, config, batch, steps, device),
                         step_timer(theirs, config, batch, steps, device), repeats)
    return {"config": name, "batch": batch, "ratio": statistics.median(ratios),
            "ratios": ratios}


def fashion_root(source: Path) -> Path:
    """torchvision's FashionMNIST wants uncompressed files under FashionMNIST/raw."""
    root = Path(tempfile.mkdtemp(prefix="cnnzoo-bench-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in source.glob("*.gz"):
        with gzip.open(path) as src, open(raw / path.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def training_loop(plan: Plan, config: ExperimentConfig, device: torch.device,
                  batches: Callable[[], Any], nhwc: bool) -> Callable[[], float]:
    """A minimal hand-written training loop over `batches()`: images/s of one pass."""
    precision = resolve_precision(config.train.precision, device)

    def rate() -> float:
        torch.manual_seed(0)
        model = build_model(plan).to(device)
        if nhwc:
            model = model.to(memory_format=torch.channels_last)
        optimizer = create_optimizer(model, config.train)
        model.train()
        seen = 0
        sync(device)
        start = time.perf_counter()
        for x, y in batches():
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, precision):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        sync(device)
        return seen / (time.perf_counter() - start)

    return rate


def bench_trainer(name: str, repeats: int, steps: int, torchvision_root: Path,
                  out_dir: Path, device: torch.device) -> dict:
    config = load_config(name, [
        "data.val_split=0", "data.augment.crop=0", "data.augment.flip=false",
        "data.augment.erase=0", "train.epochs=1"])
    batch = config.train.batch_size
    images = steps * batch
    config = with_overrides(config, [f"data.limit_train={images}", "data.limit_test=1000"])
    plan = plan_experiment(config)
    run_index = iter(range(10_000))

    def cnnzoo_rate() -> float:
        out = out_dir / f"{name}-{next(run_index)}"
        with contextlib.redirect_stdout(io.StringIO()):
            result = fit(config, out=out, show_progress=False, callbacks=[],
                         device=str(device))
        shutil.rmtree(out, ignore_errors=True)
        return result.history[0].images_per_s

    data = load_dataset(config.data, plan.input, plan.output.depth, seed=0)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x_all = ((data.train.images.float() / 255 - mean) / std).to(device)
    y_all = data.train.labels.to(device)
    channels_last = resolve_channels_last(config.train.channels_last, plan, device)
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)

    def in_memory():
        order = torch.randperm(len(y_all), device=device)
        for i in range(steps):
            index = order[i * batch:(i + 1) * batch]
            yield x_all[index], y_all[index]

    import torchvision
    from torchvision import transforms

    dataset = torchvision.datasets.FashionMNIST(
        torchvision_root, train=True, download=False,
        transform=transforms.Compose([transforms.ToTensor(),
                                      transforms.Normalize(data.mean, data.std)]))
    dataset = torch.utils.data.Subset(dataset, range(images))

    def examples_loader():
        # pytorch/examples mnist/main.py: no workers on the CPU (one worker and pinned
        # memory with CUDA, as it sets them), shuffled batches, and the model in
        # PyTorch's default memory layout.
        cuda = device.type == "cuda"
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                               num_workers=1 if cuda else 0, pin_memory=cuda)

    hand = training_loop(plan, config, device, in_memory, channels_last)
    examples = training_loop(plan, config, device, examples_loader, False)
    ours_vs_hand, ours_vs_examples, rates = [], [], {"cnnzoo": [], "hand": [], "examples": []}
    for _ in range(repeats):
        a, b, c = cnnzoo_rate(), hand(), examples()
        rates["cnnzoo"].append(a)
        rates["hand"].append(b)
        rates["examples"].append(c)
        ours_vs_hand.append(a / b)
        ours_vs_examples.append(a / c)
    return {
        "config": name, "batch": batch, "steps": steps,
        "images_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "vs_hand": statistics.median(ours_vs_hand),
        "vs_examples": statistics.median(ours_vs_examples),
        "macs": plan.total_macs,
    }


def gemm_flops(dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if count % 10 == 0:
            sync(device)
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start)
