"""How fast cnnzoo trains, as ratios against hand-written PyTorch measured in this run.

    python scripts/bench.py                 # all sections, about 5 minutes on 2 cores
    python scripts/bench.py --quick         # fewer and shorter repeats
    python scripts/bench.py --json out.json # also write the numbers
    python scripts/bench.py --device cuda   # the same on a GPU (data on the GPU)

Sections, each pair timed interleaved (A, B, A, B, ...) and summarised by the
median of the per-repeat ratios, so a slow moment of a shared machine hits both:

1. builder: a cnnzoo-built network vs the same network written by hand as an
   nn.Module (tests/reference_nets.py), one training step (forward, backward,
   optimizer) on a fixed batch. Target: time ratio <= 1.03.
2. trainer: `cnnzoo train`'s training-phase images/s (cnnzoo.training.trainer.fit on the
   real Fashion-MNIST, augmentation off) vs a minimal hand-written loop over the
   same in-memory tensors with the same network, batch, optimizer and memory
   layout (target >= 0.9), and vs the pytorch/examples loop: torchvision's
   FashionMNIST with ToTensor and Normalize per sample through a DataLoader, the
   model in PyTorch's default layout (target >= 2.5x).
3. roofline: the machine's fp32 (and bf16) GEMM FLOP/s, and each config's
   training FLOP/s (3 x forward mult-adds x 2 per image) as a fraction of it.
   Target: >= 60% of the fp32 peak for the fast Fashion-MNIST config.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cnnzoo  # noqa: E402
from cnnzoo.config import with_overrides  # noqa: E402
from cnnzoo.data.pipeline import load_dataset  # noqa: E402
from cnnzoo.training.devices import (  # noqa: E402
    autocast,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from cnnzoo.training.optim import create_optimizer  # noqa: E402
from cnnzoo.training.trainer import fit  # noqa: E402
from tests.reference_nets import LeNet5, SpeedrunNet  # noqa: E402

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


def step_timer(model: torch.nn.Module, config: cnnzoo.ExperimentConfig, batch: int,
               steps: int, device: torch.device) -> Callable[[], float]:
    """Seconds for `steps` training steps of `model` on one fixed batch."""
    train = config.train
    plan = cnnzoo.plan_experiment(config)
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

    for _ in range(3):
        step()

    def run() -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        return time.perf_counter() - start

    return run


def bench_builder(name: str, repeats: int, steps: int, device: torch.device) -> dict:
    config = cnnzoo.load_config(name)
    batch = config.train.batch_size
    torch.manual_seed(0)
    ours = cnnzoo.build_model(config)
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


def bench_trainer(name: str, repeats: int, steps: int, torchvision_root: Path,
                  out_dir: Path, device: torch.device) -> dict:
    config = cnnzoo.load_config(name, [
        "data.val_split=0", "data.augment.crop=0", "data.augment.flip=false",
        "data.augment.erase=0", "train.epochs=1"])
    batch = config.train.batch_size
    images = steps * batch
    config = with_overrides(config, [f"data.limit_train={images}", "data.limit_test=1000"])
    plan = cnnzoo.plan_experiment(config)
    run_index = iter(range(10_000))

    def cnnzoo_rate() -> float:
        out = out_dir / f"{name}-{next(run_index)}"
        with contextlib.redirect_stdout(io.StringIO()):
            result = fit(config, out=out, show_progress=False, callbacks=[],
                         device=str(device))
        shutil.rmtree(out, ignore_errors=True)
        return float(result.history[0]["images_per_s"])

    data = load_dataset(config.data, plan.input, plan.output.depth, seed=0)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x_all = ((data.train.images.float() / 255 - mean) / std).to(device)
    y_all = data.train.labels.to(device)
    channels_last = resolve_channels_last(config.train.channels_last, plan, device)
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    precision = resolve_precision(config.train.precision, device)

    def training_loop(batches: Callable[[], object], nhwc: bool) -> Callable[[], float]:
        def rate() -> float:
            torch.manual_seed(0)
            model = cnnzoo.build_model(plan).to(device)
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

    hand = training_loop(in_memory, channels_last)
    examples = training_loop(examples_loader, False)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--configs", nargs="+", default=["lenet5", "fashion-speedrun"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cpu", help="cpu (the default) or cuda")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per trainer measurement (200; 60 with --quick)")
    parser.add_argument("--fashion", type=Path, default=FASHION,
                        help="the folder of the four Fashion-MNIST .gz files")
    args = parser.parse_args()
    if not (args.fashion / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"needs the real Fashion-MNIST in {args.fashion}: "
                 "apt-get install dataset-fashion-mnist")
    device = resolve_device(args.device)
    repeats = 3 if args.quick else 7
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} CPU threads")
    results: dict = {"device": where, "threads": torch.get_num_threads(),
                     "torch": str(torch.__version__)}

    print(f"cnnzoo speed on {where}, torch {torch.__version__}")
    print("\n1. builder: cnnzoo-built network / hand-written nn.Module, time per training step"
          " (target <= 1.03)")
    results["builder"] = []
    for name in args.configs:
        row = bench_builder(name, repeats, 10 if args.quick else 30, device)
        results["builder"].append(row)
        print(f"   {name:18s} batch {row['batch']:4d}: ratio {row['ratio']:.3f} "
              f"(repeats {', '.join(f'{r:.3f}' for r in row['ratios'])})")

    print("\n2. trainer: training-phase images/s, cnnzoo train vs hand-written loops "
          "(targets: >= 0.9 vs in-memory, >= 2.5 vs pytorch/examples)")
    root = fashion_root(args.fashion)
    out_dir = Path(tempfile.mkdtemp(prefix="cnnzoo-bench-runs-"))
    results["trainer"] = []
    try:
        for name in args.configs:
            steps = args.steps or (60 if args.quick else 200)
            row = bench_trainer(name, repeats, steps, root, out_dir, device)
            results["trainer"].append(row)
            rates = row["images_per_s"]
            print(f"   {name:18s} cnnzoo {rates['cnnzoo']:8,.0f}  in-memory loop "
                  f"{rates['hand']:8,.0f}  pytorch/examples {rates['examples']:8,.0f} img/s; "
                  f"cnnzoo/in-memory {row['vs_hand']:.2f}, cnnzoo/examples "
                  f"{row['vs_examples']:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)

    print("\n3. roofline: training FLOP/s = 6 x forward mult-adds x images/s")
    if device.type == "cuda":
        # The fp32 peak of a GPU is its TF32 tensor-core rate, which conv layers use.
        torch.backends.cuda.matmul.allow_tf32 = True
    fp32 = gemm_flops(torch.float32, device)
    bf16 = gemm_flops(torch.bfloat16, device)
    results["gemm_flops"] = {"fp32": fp32, "bf16": bf16}
    n = 8192 if device.type == "cuda" else 2048
    print(f"   GEMM {n}x{n}: fp32 {fp32 / 1e9:,.0f} GFLOP/s, bf16 {bf16 / 1e9:,.0f} GFLOP/s")
    results["roofline"] = []
    for row in results["trainer"]:
        config = cnnzoo.load_config(row["config"])
        achieved = 6 * row["macs"] * row["images_per_s"]["cnnzoo"]
        entry = {"config": row["config"], "flops": achieved, "of_fp32_peak": achieved / fp32,
                 "precision": config.train.precision}
        results["roofline"].append(entry)
        extra = (f", {achieved / bf16:.0%} of the bf16 peak"
                 if config.train.precision == "bf16" else "")
        print(f"   {row['config']:18s} {achieved / 1e9:6,.0f} GFLOP/s = "
              f"{achieved / fp32:.0%} of the fp32 peak{extra} ({config.train.precision})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
