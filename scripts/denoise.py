"""Denoising Fashion-MNIST: Gaussian noise, then no filter, the best spatial Gaussian blur
and the best ideal / Gaussian / Butterworth low-pass, each filter's strength chosen on
held-out images. Prints a Markdown table (PSNR, SSIM) and draws one picture.

    python scripts/denoise.py --picture docs/denoise.png

With --runs, also the test accuracy of trained classifiers on clean and noisy images:

    python scripts/denoise.py --runs runs/lowpass-frontend runs/fashion-small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cnnzoo.measure.denoise import (
    DENOISERS,
    FASHION_MNIST,
    Score,
    fashion_test_images,
    measure,
    noisy_accuracy,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3],
                        help="noise standard deviations (pixel values in [0, 1])")
    parser.add_argument("--val", type=int, default=1000,
                        help="test images held out to choose each filter's strength")
    parser.add_argument("--test", type=int, default=9000,
                        help="test images scored (after the held-out ones)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--root", type=Path, default=FASHION_MNIST,
                        help="folder of Fashion-MNIST's IDX files")
    parser.add_argument("--picture", type=Path, help="PNG: noisy, each filter, clean")
    parser.add_argument("--picture-sigma", type=float, default=0.2,
                        help="the noise level the picture shows")
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="trained runs to evaluate on clean and noisy test images")
    args = parser.parse_args(argv)
    if args.val < 1 or args.test < 1 or args.val + args.test > 10_000:
        parser.error("--val and --test must be positive and add up to at most 10000")
    if any(s <= 0 for s in args.sigmas):
        parser.error("--sigmas must be positive")
    return args


def table(scores: list[Score]) -> str:
    lines = ["| noise sigma | method | strength (chosen on held-out images) | PSNR (dB) | SSIM |",
             "|---|---|---|---|---|"]
    units = {d.name: d.strength for d in DENOISERS}
    for s in scores:
        strength = "" if s.strength is None else f"{units[s.method]} {s.strength:g}"
        lines.append(f"| {s.sigma:g} | {s.method} | {strength} | {s.psnr:.2f} | {s.ssim:.3f} |")
    return "\n".join(lines)


def draw(path: Path, clean: np.ndarray, outputs: dict[str, np.ndarray], sigma: float,
         scores: list[Score], count: int = 8) -> None:
    """Rows: noisy, each filter's result, clean; one column per test image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*outputs.items(), ("clean", clean)]
    psnrs = {s.method: s.psnr for s in scores}
    psnrs["noisy"] = psnrs["no filter"]
    fig, axes = plt.subplots(len(rows), count, figsize=(1.2 * count + 2.6, 1.25 * len(rows)))
    for r, (name, images) in enumerate(rows):
        for c in range(count):
            ax = axes[r, c]
            ax.imshow(images[c].clip(0, 1), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        label = name if name == "clean" else f"{name}\n{psnrs[name]:.1f} dB"
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Fashion-MNIST test images with Gaussian noise sigma {sigma:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    images, labels = fashion_test_images(args.root)
    val, test = images[: args.val], images[args.val: args.val + args.test]
    all_scores = []
    for sigma in args.sigmas:
        scores, outputs = measure(val, test, sigma, args.seed)
        all_scores += scores
        if args.picture is not None and sigma == args.picture_sigma:
            draw(args.picture, test, outputs, sigma, scores)
        print(f"sigma {sigma:g}: done", file=sys.stderr)
    print(f"Fashion-MNIST, strengths chosen on {args.val} held-out test images, scored on "
          f"the next {args.test} (noise seed {args.seed}):\n")
    print(table(all_scores))
    if args.runs:
        sigmas = (0.0, *args.sigmas)
        print("\n| run | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " |")
        print("|---|" + "---|" * len(sigmas))
        for run in args.runs:
            accuracy = noisy_accuracy(run, images, labels, sigmas, args.seed)
            print(f"| {run.name} | " + " | ".join(f"{100 * accuracy[s]:.2f}%" for s in sigmas)
                  + " |")
    if args.picture is not None and args.picture_sigma not in args.sigmas:
        print(f"no picture: --picture-sigma {args.picture_sigma:g} is not among --sigmas",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
