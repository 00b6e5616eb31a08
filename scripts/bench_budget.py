"""`cnnzoo train --config fashion-speedrun` whole, with and without a CPU hog, with the
time budget's re-planning on and off (`train.time_budget_replan=false`: the first plan
kept, as before re-planning).

    nice -n 10 .venv/bin/python scripts/bench_budget.py            # the four runs
    .venv/bin/python scripts/bench_budget.py --hog-after 20 --cases hog-replan

The hog is one busy loop per core, started `--hog-after` seconds into the command
and stopped when it ends. Each run is the complete command in a fresh process; the
table gives its wall time, the training loop's seconds against the budget, the steps
planned first and taken, the re-plans and the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = {  # name: (hog, re-planning)
    "quiet-first-plan": (False, False), "quiet-replan": (False, True),
    "hog-first-plan": (True, False), "hog-replan": (True, True),
}


def start_hog(cores: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


def run_case(name: str, out: Path, config: str, hog_after: float, sets: list[str]) -> dict:
    hog, replan = CASES[name]
    command = [sys.executable, "-m", "cnnzoo", "train", "--config", config, "--device", "cpu",
               "--out", str(out / name), "--set", f"train.time_budget_replan={str(replan).lower()}"]
    for text in sets:
        command += ["--set", text]
    hogs: list[subprocess.Popen] = []
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = None
    if hog:
        timer = threading.Timer(hog_after, lambda: hogs.extend(start_hog(os.cpu_count() or 1)))
        timer.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    if timer is not None:
        timer.cancel()
    for process in hogs:
        process.kill()
        process.wait()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr}")
    results = json.loads((out / name / "results.json").read_text())
    budget = results["budget"]
    lines = [line for line in stdout.splitlines() if "time budget" in line]
    # results.json's list also holds a first plan that cut the steps; count the re-plans
    # by their printed lines, one each.
    return {"case": name, "wall_seconds": wall, "loop_seconds": budget["loop_seconds"],
            "budget": budget["seconds"], "planned_steps": budget["planned_steps"],
            "steps": budget["steps"], "replans": sum("re-planned" in line for line in lines),
            "test_accuracy": results["test_accuracy"], "lines": lines}


def table(rows: list[dict]) -> str:
    lines = ["| case | whole command | training loop / budget | steps (first plan) | "
             "re-plans | test accuracy |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['wall_seconds']:.1f} s | {r['loop_seconds']:.1f} s / "
                     f"{r['budget']:g} s | {r['steps']:,} ({r['planned_steps']:,}) | "
                     f"{r['replans']} | {r['test_accuracy']:.2%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="fashion-speedrun")
    parser.add_argument("--hog-after", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temp dir)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run, as cnnzoo train --set (repeatable)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cnnzoo-bench-budget-"))
    rows = []
    for name in args.cases:
        row = run_case(name, out, args.config, args.hog_after, args.sets)
        rows.append(row)
        print(f"{name}: {row['wall_seconds']:.1f}s, {row['test_accuracy']:.2%}", flush=True)
        for line in row["lines"]:
            print(f"    {line}", flush=True)
    print()
    print(table(rows))
    (out / "bench_budget.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
