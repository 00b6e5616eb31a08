"""How fast cnnzoo trains, as ratios against hand-written PyTorch measured in this run.

    python scripts/bench.py                 # all sections, about 5 minutes on 2 cores
    python scripts/bench.py --quick         # fewer and shorter repeats
    python scripts/bench.py --json out.json # also write the numbers
    python scripts/bench.py --device cuda   # the same on a GPU (data on the GPU)

Sections, each pair timed interleaved (A, B, A, B, ...) and summarised by the
median of the per-repeat ratios, so a slow moment of a shared machine hits both:

1. builder: a cnnzoo-built network vs the same network written by hand as an
   nn.Module (cnnzoo/reference_nets.py), one training step (forward, backward,
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
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.measure.benchmarks import bench_builder, bench_trainer, fashion_root, gemm_flops
from cnnzoo.model.devices import (
    resolve_device,
)

FASHION = Path("/usr/share/datasets/fashion-mnist")


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
