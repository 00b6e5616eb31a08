"""Direct vs FFT convolution, `impl: auto` vs the faster of the two, and `local` vs `conv`.

Every number is measured in this one run, interleaved (each repeat runs every
variant once, in rotating order), so that load from other processes hits all
variants alike. Times are medians over the repeats; ratios are medians of the
per-repeat ratios (variants timed back to back), which cancel slow changes in load.

    .venv/bin/python scripts/bench_conv.py            # the tables
    .venv/bin/python scripts/bench_conv.py --fit      # refit the cost model's constants

The layers are built from layer specs through the planner, exactly as in a model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from cnnzoo.layers.basic import InputSpec
from cnnzoo.layers.conv import ConvSpec
from cnnzoo.layers.fft import ConvShape, choose_impl, direct_terms, fft_terms
from cnnzoo.layers.local import LocalSpec
from cnnzoo.layers.shapes import Volume
from cnnzoo.layers.spec import LayerSpec
from cnnzoo.model.build import build_layer
from cnnzoo.model.plan import plan_layers


def build(spec: LayerSpec, volume: Volume) -> torch.nn.Module:
    plan = plan_layers([InputSpec.of(volume), spec])
    return build_layer(plan.layers[1])


def interleaved(variants: dict[str, Callable[[], object]], repeats: int
                ) -> dict[str, list[float]]:
    """Seconds of each variant in every repeat, measured in rotating order."""
    names = list(variants)
    for fn in variants.values():
        fn()  # warm-up: allocations, FFT plans, oneDNN primitives
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def ratio(over: list[float], under: list[float]) -> float:
    """Median of the per-repeat ratios over / under."""
    return statistics.median(a / b for a, b in zip(over, under, strict=True))


def forward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return module(x)

    return run


def forward_backward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).square().mean().backward()
        return None

    return run


def kernel_sizes_table(repeats: int, batch: int, size: int, depth: int, filters: int) -> None:
    volume = Volume(size, size, depth)
    x = torch.randn(batch, depth, size, size)
    print(f"direct vs fft: batch {batch} of {volume}, {filters} filters, padding same, "
          f"forward, {repeats} repeats")
    print(f"{'kernel':>6}  {'direct ms':>9}  {'fft ms':>7}  {'direct/fft':>10}  {'faster':>6}  "
          f"{'auto picks':>10}  {'auto/faster':>11}  {'picked/faster':>13}")
    worst = worst_pick = 0.0
    for k in range(3, 32, 2):
        modules = {
            impl: build(ConvSpec(filters=filters, kernel=(k, k), padding="same", impl=impl),
                        volume)
            for impl in ("direct", "fft", "auto")
        }
        t = interleaved({impl: forward(m, x) for impl, m in modules.items()}, repeats)
        faster = [min(d, f) for d, f in zip(t["direct"], t["fft"], strict=True)]
        picked = modules["auto"].impl
        speedup = ratio(t["direct"], t["fft"])
        # auto's own time (noise included), and the time of the impl it picked: the
        # quality of the decision, which is what the cost model controls
        auto, pick = ratio(t["auto"], faster), ratio(t[picked], faster)
        worst, worst_pick = max(worst, auto), max(worst_pick, pick)
        print(f"{k:>6}  {median(t['direct']) * 1e3:>9.1f}  {median(t['fft']) * 1e3:>7.1f}  "
              f"{speedup:>10.2f}  {'fft' if speedup > 1 else 'direct':>6}  "
              f"{picked:>10}  {auto:>11.2f}  {pick:>13.2f}")
    print(f"auto at worst {worst:.2f}x the faster of the two as measured; the impl it picks "
          f"at worst {worst_pick:.2f}x")


def local_table(repeats: int) -> None:
    volume = Volume(14, 14, 32)
    x = torch.randn(128, 32, 14, 14, requires_grad=True)
    conv = build(ConvSpec(filters=64, kernel=(3, 3), padding="same"), volume)
    local = build(LocalSpec(filters=64, kernel=(3, 3), padding="same"), volume)
    t = interleaved({"conv": forward_backward(conv, x), "local": forward_backward(local, x)},
                    repeats)
    print(f"\nlocal vs conv: batch 128 of {volume}, 64 filters of 3x3, padding same, "
          f"forward+backward, {repeats} repeats")
    print(f"conv {median(t['conv']) * 1e3:.1f} ms, local {median(t['local']) * 1e3:.1f} ms, "
          f"local/conv {ratio(t['local'], t['conv']):.2f}")


def fit(repeats: int) -> None:
    """Least-squares fit (relative error, non-negative) of the cost model's constants,
    on the fastest of the repeats: load from other processes only ever adds time."""
    from scipy.optimize import nnls

    rows_direct, rows_fft, measured = [], [], []
    batch = 8
    for depth, filters, size in ((8, 8, 128), (3, 16, 96), (16, 16, 64), (32, 32, 32),
                                 (64, 64, 16), (8, 8, 64), (1, 8, 128)):
        for k in (3, 5, 9, 13, 17, 23, 31):
            if k > size:
                continue
            volume = Volume(size, size, depth)
            x = torch.randn(batch, depth, size, size)
            mods = {impl: build(ConvSpec(filters=filters, kernel=(k, k), padding="same",
                                         impl=impl), volume) for impl in ("direct", "fft")}
            t = interleaved({i: forward(m, x) for i, m in mods.items()}, repeats)
            pad = k - 1
            shape = ConvShape(depth, filters, 1, (size + pad, size + pad), (k, k), (1, 1), (1, 1))
            rows_direct.append(direct_terms(shape))
            rows_fft.append(fft_terms(shape))
            best = {impl: min(times) for impl, times in t.items()}
            measured.append((best["direct"] / batch, best["fft"] / batch))
            print(f"{volume} -> {filters} filters {k}x{k}: direct {best['direct'] * 1e3:.1f} "
                  f"ms, fft {best['fft'] * 1e3:.1f} ms", flush=True)
    times = np.array(measured)
    for name, rows, col in (("DIRECT_COST", rows_direct, 0), ("FFT_COST", rows_fft, 1)):
        a = np.array(rows) / times[:, col:col + 1]
        coef, _ = nnls(a, np.ones(len(rows)))
        error = np.abs(a @ coef - 1)
        print(f"{name} = ({', '.join(f'{c:.2g}' for c in coef)})  # relative error: median "
              f"{np.median(error):.0%}, worst {error.max():.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fit", action="store_true", help="refit the cost model's constants")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.fit:
        fit(args.repeats)
        return
    kernel_sizes_table(args.repeats, batch=8, size=128, depth=8, filters=8)
    crossover = next(
        (k for k in range(1, 64) if choose_impl(ConvShape(
            8, 8, 1, (127 + k, 127 + k), (k, k), (1, 1), (1, 1))) == "fft"), None)
    print(f"the cost model's crossover on this shape: fft from {crossover}x{crossover}")
    local_table(args.repeats)


if __name__ == "__main__":
    main()
