"""`cnnzoo predict` over the Fashion-MNIST test set written out as PNG files, against a
hand-written torchvision loop (ImageFolder + DataLoader + the same network) on the same
files, threads and worker processes; for the torch and the onnxruntime backend.

    nice -n 10 .venv/bin/python scripts/bench_predict.py [--config lenet5] \\
        [--images 10000] [--batch-size 64] [--workers N] [--threads N] [--repeats 2]

predict's time is that of the command's work after start-up: the paths streamed from
the folder, decoded in worker processes, run through the network in batches, the
answers written to a CSV file; the loop's is its pass over the DataLoader, answers kept
in memory. Both read every file from the page cache (each is read once beforehand).
The best of `--repeats` passes counts, each side alternating, so a burst of load from
elsewhere on the machine hurts both alike. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_test_set(root: Path, count: int, classes: list[str]) -> None:
    """The first `count` test images as PNGs, one folder per class (ImageFolder's layout)."""
    from PIL import Image

    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    for name in classes:
        (root / name.replace("/", "-")).mkdir(parents=True)
    for i in range(count):
        folder = root / classes[labels[i]].replace("/", "-")
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def time_predict(predictor, root: Path, out: Path, batch_size: int, workers: int) -> float:
    """Images/s of `cnnzoo predict ROOT --out out.csv`'s work, after start-up."""
    from cnnzoo.tools.predict.inputs import iter_inputs
    from cnnzoo.tools.predict.outputs import open_writer
    from cnnzoo.tools.predict.stream import stream_predictions

    start = time.perf_counter()
    count = 0
    with open_writer(out, False, predictor.top, predictor.kind) as write:
        for item in stream_predictions(predictor, iter_inputs([root]), batch_size, workers):
            assert item.ok, item.error
            write(item)
            count += 1
    return count / (time.perf_counter() - start)


def time_loop(network: Callable, root: Path, mean: float, std: float, batch_size: int,
              workers: int) -> float:
    """Images/s of the loop everyone writes first: ImageFolder, DataLoader, the network,
    softmax and top-3, kept in a list."""
    import torch
    from torchvision import datasets, transforms

    preprocess = transforms.Compose([transforms.Grayscale(1), transforms.ToTensor(),
                                     transforms.Normalize((mean,), (std,))])
    folder = datasets.ImageFolder(str(root), transform=preprocess)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    answers = []
    with torch.no_grad():
        for images, _ in loader:
            top = network(images).softmax(1).topk(3)
            answers.extend(zip(top.values.tolist(), top.indices.tolist(), strict=True))
    return len(answers) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="lenet5", help="a bundled config with weights")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes for both (default: predict's default)")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime "
                        "threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from cnnzoo.tools.predict.predictor import Predictor
    from cnnzoo.tools.predict.stream import default_workers

    if args.threads:
        torch.set_num_threads(args.threads)
    workers = default_workers() if args.workers is None else args.workers
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "images"
        predictors = {backend: Predictor(args.config, pretrained=True, backend=backend,
                                         device="cpu") for backend in ("torch", "onnxruntime")}
        run = predictors["torch"].run
        if run.config.train.tta != "none":
            sys.exit(f"{args.config} predicts with train.tta: {run.config.train.tta}, which "
                     "the hand-written loop does not; pick a config without it")
        write_test_set(root, args.images, run.classes)
        for path in root.rglob("*.png"):
            path.read_bytes()  # into the page cache for both sides
        mean, std = run.info["mean"][0], run.info["std"][0]
        for backend, predictor in predictors.items():
            ours, theirs = 0.0, 0.0
            for _ in range(args.repeats):
                ours = max(ours, time_predict(predictor, root, Path(scratch) / "out.csv",
                                              args.batch_size, workers))
                theirs = max(theirs, time_loop(predictor.network, root, mean, std,
                                               args.batch_size, workers))
            rows.append((backend, ours, theirs))
    print(f"{args.config}, {args.images:,} PNGs, batch {args.batch_size}, {workers} decoding "
          f"worker(s), {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs\n")
    print("| backend | cnnzoo predict (images/s) | ImageFolder + DataLoader loop | ratio |")
    print("|---|---:|---:|---:|")
    for backend, ours, theirs in rows:
        print(f"| {backend} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
