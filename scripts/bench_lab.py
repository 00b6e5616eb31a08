"""What `cnnzoo lab` costs, measured against the CLI in the same run.

    python scripts/bench_lab.py               # all four, a few minutes on 2 cores
    python scripts/bench_lab.py --quick       # fewer repeats, a smaller training
    python scripts/bench_lab.py --json out.json

1. plan: POST /api/plan of a 100-layer config over one kept-alive HTTP connection to
   a real `cnnzoo lab` process, against `cnnzoo summary` of the same file as a process
   (median of each). Targets: at least 20x faster, and under 50 ms.
2. events: a row appended to a live run's metrics.csv, until its `epoch` event reaches
   a client of /events (median and worst). Target: under 1 s.
3. first load: headless Chromium opening the page until it is ready (every asset
   loaded, the first config planned and drawn), and the assets' size. Target: < 1 s.
4. training: images/s of the same config trained from the lab (POST /api/runs) and by
   `cnnzoo train`, in pairs of alternating order (CLI, lab, lab, CLI, ...), each in a
   session of its own. Target: within 5%. And what the progress file the lab asks for
   adds to each training step, timed on the step's bookkeeping alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from cnnzoo.lab.bench import (
    bench_events,
    bench_first_load,
    bench_plan,
    bench_progress_file,
    bench_training,
    start_lab,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["plan", "events", "load", "training", "progress"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    runs = folder / "runs"
    process, port = start_lab(runs)
    results: dict = {}
    try:
        if "plan" not in args.skip:
            results["plan"] = bench_plan(port, folder, 20 if args.quick else 100)
            print("plan", json.dumps(results["plan"]), flush=True)
        if "events" not in args.skip:
            results["events"] = bench_events(port, runs, 5 if args.quick else 20)
            print("events", json.dumps(results["events"]), flush=True)
        if "load" not in args.skip:
            results["first_load"] = bench_first_load(port, 2 if args.quick else 5)
            print("first_load", json.dumps(results["first_load"]), flush=True)
        if "training" not in args.skip:
            results["training"] = bench_training(port, runs, folder, 2 if args.quick else 4,
                                                 5000 if args.quick else 20000)
            print("training", json.dumps(results["training"]), flush=True)
        if "progress" not in args.skip:
            results["progress_file"] = bench_progress_file(folder)
            print("progress_file", json.dumps(results["progress_file"]), flush=True)
    finally:
        process.send_signal(2)
        process.wait(60)
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
