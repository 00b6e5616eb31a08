"""What a study's storage costs `cnnzoo tune` (docs/tuning.md, "Several machines").

    python scripts/bench_tune_storage.py load  [--workers 8] [--trials 200]
    python scripts/bench_tune_storage.py study [--trials 8]

`load`: worker processes run tune's trial loop (`run_trials`: the exact-N checks,
heartbeats, retries) on a trivial objective, on a throwaway PostgreSQL cluster, a
SQLite file and a journal file; trials per second from the first trial's start to the
last one's end. `study`: one study of a small fake-data config on PostgreSQL, run by
two `cnnzoo tune --workers 2` processes at once, or by one `--workers 4` process
(each twice, alternating); the wall times and their ratio. Needs PostgreSQL's
initdb (Debian: postgresql).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.postgres import throwaway_cluster, unavailable_reason  # noqa: E402
from tests.tune.load import run_load  # noqa: E402

CONFIG = """
model:
  layers:
    - input: {width: 12, height: 12, depth: 1}
    - conv: {filters: 4, kernel: 3, padding: same, activation: relu}
    - pool: 2
    - fc: 10
data: {dataset: fake, val_split: 0.25, limit_train: 64, limit_test: 32}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}, device: cpu}
"""

SPACE = """
trials: 8
prune: false
space:
  train.optimizer.lr: {low: 1.0e-3, high: 0.1, log: true}
  model.layers[1].conv.kernel: [3, 5]
"""


def bench_load(workers: int, trials: int) -> None:
    print(f"{workers} workers, {trials} trials of a trivial objective")
    print(f"{'storage':<12} {'trials/s':>9} {'wall s':>8}  errors")
    with tempfile.TemporaryDirectory() as folder, throwaway_cluster() as cluster:
        urls = {"postgresql": cluster.create_database("load"),
                "sqlite": f"sqlite:///{folder}/study.db",
                "journal": f"journal:{folder}/study.journal"}
        for name, url in urls.items():
            load = run_load(url, workers, trials)
            print(f"{name:<12} {load.trials_per_second:>9.1f} {load.seconds:>8.1f}  "
                  f"{len(load.errors)}", flush=True)


def _tune(folder: Path, url: str, out: str, workers: int, trials: int) -> list[str]:
    return [sys.executable, "-m", "cnnzoo", "tune", "-c", str(folder / "small.yaml"),
            "--space", str(folder / "space.yaml"), "--storage", url, "--study", "s",
            "--out", str(folder / out), "--workers", str(workers), "--trials", str(trials),
            "-q"]


def _timed(commands: list[list[str]]) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for c in commands]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"cnnzoo tune failed ({process.returncode}): {err}")
    return time.perf_counter() - started


def bench_study(trials: int) -> None:
    """Each layout twice, in the order one, two, two, one, so that a load that drifts
    during the run weighs on both alike."""
    times: dict[str, list[float]] = {"one": [], "two": []}
    with tempfile.TemporaryDirectory() as name, throwaway_cluster() as cluster:
        folder = Path(name)
        (folder / "small.yaml").write_text(CONFIG)
        (folder / "space.yaml").write_text(SPACE)
        for round_, layout in enumerate(["one", "two", "two", "one"]):
            url = cluster.create_database(f"study{round_}")
            commands = ([_tune(folder, url, f"r{round_}-single", 4, trials)] if layout == "one"
                        else [_tune(folder, url, f"r{round_}-m{i}", 2, trials)
                              for i in range(2)])
            times[layout].append(_timed(commands))
            print(f"{layout}: {times[layout][-1]:.1f} s", flush=True)
    two, one = sum(times["two"]) / 2, sum(times["one"]) / 2
    print(f"{trials} trials on PostgreSQL: two processes x 2 workers {two:.1f} s, one "
          f"process x 4 workers {one:.1f} s (means of two runs), ratio {two / one:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["load", "study"])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"no PostgreSQL here: {reason}")
    if args.what == "load":
        bench_load(args.workers, args.trials or 200)
    else:
        bench_study(args.trials or 8)


if __name__ == "__main__":
    main()
