"""The Fashion-MNIST speedrun: `cnnzoo train --config fashion-speedrun`, timed whole.

    python scripts/speedrun.py                # 3 seeds, then the time to 91/92/93%
    python scripts/speedrun.py --seeds 0 1 2 3 4 --no-ladder
    python scripts/speedrun.py --device cuda --ladder 4 6 8 12 16 --seeds-at 0.94
                                              # on a GPU: the ladder first, then the
                                              # seeds at the fewest epochs reaching 94%

Each run is the complete command as a user types it, in a fresh process: start-up,
reading the data, training, the test evaluation and writing the run directory.
The time to reach 91, 92 and 93% is the wall time of the shortest run (fewer
epochs, the same one-cycle schedule squeezed) whose test accuracy reaches it, as
the CIFAR-10 speedruns report it: a run is set up for its target, not stopped
early by peeking at the test set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = (0.91, 0.92, 0.93, 0.94)
GOALS = {"cpu": (0.93, 120.0), "cuda": (0.94, 10.0)}  # median accuracy, whole-command seconds


def train(seed: int, epochs: int | None, out: Path, device: str = "cpu",
          sets: tuple[str, ...] = ()) -> dict:
    command = [sys.executable, "-m", "cnnzoo", "train", "--config", "fashion-speedrun",
               "--set", f"train.seed={seed}", "--out", str(out), "--quiet",
               "--device", device]
    for text in sets:
        command += ["--set", text]
    if epochs is not None:
        command += ["--set", f"train.epochs={epochs}"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr}")
    results = json.loads((out / "results.json").read_text())
    return {"seed": seed, "epochs": results["epochs"], "wall_seconds": wall,
            "fit_seconds": results["wall_seconds"],  # the command less start-up and imports
            "train_seconds": results["train_seconds"], "test_accuracy": results["test_accuracy"],
            "images_per_s": results["images_per_s"]}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ladder", type=int, nargs="+", default=[2, 3, 4, 5, 6],
                        help="epoch counts for the time-to-accuracy runs (seed 0)")
    parser.add_argument("--no-ladder", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (the default) or cuda")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run, as cnnzoo train --set (repeatable)")
    parser.add_argument("--seeds-at", type=float, metavar="ACCURACY",
                        help="run the ladder first, then the seeds at the fewest ladder epochs "
                        "whose run reached ACCURACY (e.g. 0.94)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cnnzoo-speedrun-"))
    cuda = args.device.startswith("cuda")
    where = gpu_name() if cuda else f"{cpu_name()}, {os.cpu_count()} cores"
    print(f"fashion-speedrun on {where}" + (f", with {' '.join(args.sets)}" if args.sets else ""))
    sets = tuple(args.sets)

    def run_ladder() -> list[dict]:
        rows = []
        for epochs in args.ladder:
            rows.append(train(0, epochs, work / f"epochs{epochs}", args.device, sets))
            row = rows[-1]
            print(f"  {epochs} epochs: {row['test_accuracy']:.2%} in {row['wall_seconds']:.1f} s "
                  f"(fit {row['fit_seconds']:.1f} s, training {row['train_seconds']:.1f} s, "
                  f"{row['images_per_s']:,.0f} images/s)", flush=True)
        return rows

    ladder = [] if args.no_ladder or args.seeds_at is None else run_ladder()
    epochs = None
    if args.seeds_at is not None:
        reached = [r for r in ladder if r["test_accuracy"] >= args.seeds_at]
        epochs = min(r["epochs"] for r in reached) if reached else max(args.ladder)
        print(f"seeds at {epochs} epochs ({'the fewest reaching' if reached else 'none reached'}"
              f" {args.seeds_at:.1%} in the ladder)")
    runs = []
    for seed in args.seeds:
        row = train(seed, epochs, work / f"seed{seed}", args.device, sets)
        runs.append(row)
        print(f"  seed {seed}: {row['test_accuracy']:.2%} test accuracy in "
              f"{row['wall_seconds']:.1f} s (training {row['train_seconds']:.1f} s, "
              f"{row['images_per_s']:,.0f} images/s)", flush=True)
    accuracy = statistics.median(r["test_accuracy"] for r in runs)
    wall = statistics.median(r["wall_seconds"] for r in runs)
    goal_accuracy, goal_seconds = GOALS["cuda" if cuda else "cpu"]
    print(f"median of {len(runs)} seeds: {accuracy:.2%} in {wall:.1f} s "
          f"(targets: >= {goal_accuracy:.1%} in <= {goal_seconds:g} s)")
    if not args.no_ladder:
        if args.seeds_at is None:
            ladder = run_ladder()
        for target in TARGETS:
            reached = [r for r in ladder + runs if r["test_accuracy"] >= target]
            best = min(reached, key=lambda r: r["wall_seconds"]) if reached else None
            text = (f"{best['wall_seconds']:.1f} s ({best['epochs']} epochs, "
                    f"{best['test_accuracy']:.2%})" if best else "not reached")
            print(f"time to {target:.0%}: {text}")
    if args.json:
        args.json.write_text(json.dumps({"machine": where, "sets": args.sets,
                                         "runs": runs, "ladder": ladder,
                                         "median_accuracy": accuracy, "median_wall": wall},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
