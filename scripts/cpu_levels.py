"""Start-up and the Fashion-MNIST speedrun at each x86 CPU level, as one markdown table.

    python scripts/cpu_levels.py                        # start-up, then 3 seeds per level
    python scripts/cpu_levels.py --seeds 0 --levels avx2
    python scripts/cpu_levels.py --no-speedrun          # start-up ratios only

Start-up: the wall time of `cnnzoo --help` and `cnnzoo summary --config lenet5`, each
as a ratio to `python -c "import torch"` (interleaved repeats, medians of the
per-repeat ratios; targets <= 0.15 and <= 0.25).

Speedrun: the README's first command, `cnnzoo train --config fashion-speedrun`, timed
whole (start-up, reading the data, training, the test evaluation, writing the run) at
each level. Lesser CPUs are emulated on a better one by capping oneDNN, ATen and MKL
together (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS), as a CPU
without those instructions would run; a level above the machine's own (AMX on a CPU
without it) cannot be emulated and is skipped. Targets: the median of the seeds at
least 93.0% in at most 60 s for the whole command where the level has bf16 (amx,
avx512_bf16), 92.0% in at most 90 s elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVELS = {
    "amx": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx512_bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
# The /proc/cpuinfo flags a level needs on this machine.
NEEDS = {"amx": {"amx_bf16", "amx_tile"}, "avx512_bf16": {"avx512_bf16"},
         "avx512": {"avx512f", "avx512bw"}, "avx2": {"avx2"}}
ACCURACY_GOAL = {"amx": 0.93, "avx512_bf16": 0.93, "avx512": 0.92, "avx2": 0.92}
# The whole command: a minute where the CPU computes bf16 natively, 90 s without.
SECONDS_GOAL = {"amx": 60.0, "avx512_bf16": 60.0, "avx512": 90.0, "avx2": 90.0}
STARTUP_GOALS = {"--help": 0.15, "summary": 0.25}
ROOT = Path(__file__).resolve().parents[1]


def wall(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr}")
    return seconds


def startup(repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds and ratios to `import torch`, timed interleaved."""
    python = sys.executable
    commands = {"import torch": [python, "-c", "import torch"],
                "--help": [python, "-m", "cnnzoo", "--help"],
                "summary": [python, "-m", "cnnzoo", "summary", "--config", "lenet5"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(wall(command))
    out = {}
    for name in ("--help", "summary"):
        ratios = [a / b for a, b in zip(times[name], times["import torch"], strict=True)]
        out[name] = {"seconds": statistics.median(times[name]),
                     "ratio": statistics.median(ratios)}
    out["import torch"] = {"seconds": statistics.median(times["import torch"]), "ratio": 1.0}
    return out


def speedrun(level: str, seed: int, work: Path) -> dict:
    out = work / f"{level}-seed{seed}"
    command = [sys.executable, "-m", "cnnzoo", "train", "--config", "fashion-speedrun",
               "--set", f"train.seed={seed}", "--out", str(out), "--quiet"]
    seconds = wall(command, LEVELS[level])
    results = json.loads((out / "results.json").read_text())
    return {"seed": seed, "seconds": seconds, "accuracy": results["test_accuracy"],
            "precision": results["precision"], "epochs": results.get("epochs_run"),
            "train_seconds": results["train_seconds"], "images_per_s": results["images_per_s"]}


def cpu_description() -> tuple[str, set[str]]:
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def level_row(level: str, runs: list[dict]) -> str:
    accuracy = statistics.median(r["accuracy"] for r in runs)
    seconds = statistics.median(r["seconds"] for r in runs)
    met = accuracy >= ACCURACY_GOAL[level] and seconds <= SECONDS_GOAL[level]
    seeds = ", ".join(f"{r['accuracy']:.2%} in {r['seconds']:.1f} s" for r in runs)
    epochs = statistics.median(r["epochs"] or 0 for r in runs)
    speed = statistics.median(r["images_per_s"] for r in runs)
    return (f"| {level} | {runs[0]['precision']} | {epochs:.2f} | {speed:,.0f} | "
            f"**{accuracy:.2%}** | **{seconds:.1f} s** | >= {ACCURACY_GOAL[level]:.0%}, "
            f"<= {SECONDS_GOAL[level]:g} s: {'met' if met else 'missed'} | {seeds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--levels", nargs="+", choices=list(LEVELS), default=list(LEVELS))
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--no-speedrun", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

    name, flags = cpu_description()
    print(f"{name}, {os.cpu_count()} cores; python {sys.version.split()[0]}\n")
    times = startup(args.startup_repeats)
    print("| command | seconds | ratio to `import torch` | target |\n|---|---:|---:|---|")
    for command in ("import torch", "--help", "summary"):
        row = times[command]
        goal = STARTUP_GOALS.get(command)
        verdict = (f"<= {goal}: {'met' if row['ratio'] <= goal else 'missed'}"
                   if goal else "")
        print(f"| `{command}` | {row['seconds']:.2f} | {row['ratio']:.2f} | {verdict} |",
              flush=True)
    record = {"cpu": name, "startup": times, "levels": {}}
    if not args.no_speedrun:
        work = Path(tempfile.mkdtemp(prefix="cnnzoo-levels-"))
        rows = []
        for level in args.levels:
            if not NEEDS[level] <= flags:
                rows.append(f"| {level} | | | | | | not on this CPU (cannot be emulated) | |")
                continue
            runs = []
            for seed in args.seeds:
                runs.append(speedrun(level, seed, work))
                print(f"  {level} seed {seed}: {runs[-1]['accuracy']:.2%} in "
                      f"{runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
            record["levels"][level] = runs
            rows.append(level_row(level, runs))
        print(f"\n`cnnzoo train --config fashion-speedrun`, median of {len(args.seeds)} "
              f"seed{'s' if len(args.seeds) > 1 else ''} per level:\n")
        print("| level | precision | epochs | images/s | accuracy | whole command | target | "
              "seeds |\n|---|---|---:|---:|---:|---:|---|---|")
        print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
