"""The measurements behind scripts/bench_lab.py: the lab as a real process against the
CLI (plan round trips, row-to-event delays, the page's first load in headless
Chromium, training rates) and what its progress file adds to a training step."""

from __future__ import annotations

import csv
import http.client
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cnnzoo.errors import CnnzooError
from cnnzoo.lab.server import STATIC
from cnnzoo.runs import rundir
from cnnzoo.runs.lock import lock_run, release

FASHION = Path("/usr/share/datasets/fashion-mnist")


def hundred_layers() -> str:
    """A 100-layer network: the input, 32 times conv, batchnorm, relu, then a pool, a
    1x1 conv to the ten classes and a global pool."""
    block = ("    - conv: {filters: 16, kernel: 3, padding: same}\n"
             "    - batchnorm\n    - relu\n")
    return ("name: hundred\nmodel:\n  layers:\n    - input: {width: 32, height: 32, depth: 3}\n"
            + block * 32 + "    - pool: 2\n    - conv: {filters: 10, kernel: 1}\n"
            "    - global_pool\ndata: {dataset: cifar10}\n")


def start_lab(runs: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "cnnzoo", "lab", "--runs", str(runs),
                                "--port", str(port), "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    if str(port) not in line:
        raise CnnzooError(f"the lab did not start: {line}{process.stdout.read()}")
    return process, port


def bench_plan(port: int, folder: Path, repeats: int) -> dict:
    text = hundred_layers()
    path = folder / "hundred.yaml"
    path.write_text(text)
    connection = http.client.HTTPConnection("127.0.0.1", port)
    api = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        connection.request("POST", "/api/plan", body=text.encode())
        answer = connection.getresponse()
        document = json.loads(answer.read())
        api.append(time.perf_counter() - start)
        assert answer.status == 200 and len(document["layers"]) == 100, document
    api = api[3:]  # the first requests import the planner
    process = []
    for _ in range(max(3, repeats // 10)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnzoo", "summary", "--config", str(path)],
                       check=True, capture_output=True)
        process.append(time.perf_counter() - start)
    api_ms, process_ms = statistics.median(api) * 1e3, statistics.median(process) * 1e3
    return {"api_median_ms": api_ms, "api_max_ms": max(api) * 1e3,
            "summary_process_median_ms": process_ms, "speedup": process_ms / api_ms,
            "layers": 100}


def bench_events(port: int, runs: Path, repeats: int) -> dict:
    """Append rows to a run held live by this process, time each row to its event."""
    run = runs / "live"
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text("name: live\n")
    lock = lock_run(run)
    log = rundir.CsvLog(run / rundir.METRICS, rundir.METRIC_FIELDS)
    arrived: list[float] = []
    ready = threading.Event()

    def listen() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "/api/runs/live/events")
        answer = connection.getresponse()
        ready.set()
        while len(arrived) < repeats:
            line = answer.fp.readline()
            if line.startswith(b"event: epoch"):
                arrived.append(time.perf_counter())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ready.wait(30)
    delays = []
    jitter = random.Random(0)
    for epoch in range(1, repeats + 1):
        # A pause that is no multiple of the lab's look at the files: each row lands at
        # another moment of its 0.1 s cycle.
        time.sleep(0.25 + 0.2 * jitter.random())
        written = time.perf_counter()
        log.append([{"epoch": epoch, "split": "train", "loss": 1.0 / epoch, "accuracy": 0.5,
                     "lr": 0.1, "seconds": 1.0, "images_per_s": 1000.0}])
        while len(arrived) < epoch:
            time.sleep(0.001)
        delays.append(arrived[epoch - 1] - written)
    release(lock)
    return {"median_ms": statistics.median(delays) * 1e3, "max_ms": max(delays) * 1e3,
            "rows": repeats}


def bench_first_load(port: int, repeats: int) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    loads, ready = [], []
    for _ in range(repeats):
        profile = tempfile.mkdtemp()  # a fresh profile each time: nothing cached
        options.arguments[:] = [a for a in options.arguments if not a.startswith("--user")]
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options,
                                  service=Service(shutil.which("chromedriver")))
        driver.get(f"http://127.0.0.1:{port}/")
        while not driver.execute_script("return window.cnnzooLab && window.cnnzooLab.ready"):
            time.sleep(0.02)
        timing = driver.execute_script(
            "return [performance.getEntriesByType('navigation')[0].loadEventEnd, "
            "window.cnnzooLab.readyAt]")
        loads.append(timing[0])
        ready.append(timing[1])
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assets = [STATIC / "index.html", STATIC / "lab.js", STATIC / "lab.css",
              *sorted((STATIC / "vendor").glob("*.js")), *sorted((STATIC / "vendor").glob("*.css"))]
    return {"all_assets_loaded_median_ms": statistics.median(loads),
            "ready_median_ms": statistics.median(ready), "ready_max_ms": max(ready),
            "asset_bytes": sum(p.stat().st_size for p in assets),
            "assets": {p.name: p.stat().st_size for p in assets}}


def training_config(limit: int) -> str:
    return f"""name: speed
model:
  layers:
    - input: {{width: 28, height: 28, depth: 1}}
    - conv: {{filters: 32, kernel: 3, padding: same, activation: relu}}
    - pool: 2
    - conv: {{filters: 64, kernel: 3, padding: same, activation: relu}}
    - pool: 2
    - fc: 10
data: {{dataset: fashion_mnist, root: {FASHION}, download: false, limit_train: {limit},
       augment: {{flip: false}}}}
train: {{epochs: 2, batch_size: 128, device: cpu, optimizer: {{name: sgd, lr: 0.05}}}}
"""


def train_images_per_s(run: Path) -> float:
    with open(run / rundir.METRICS, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    return statistics.mean(float(r["images_per_s"]) for r in rows)


def train_cli(config: Path, out: Path) -> float:
    # A session of its own, as the lab starts its trainings: with the kernel's autogroup
    # scheduling a session is a unit of CPU share, and a busy machine would otherwise
    # give the two different shares.
    subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--config", str(config),
                    "--out", str(out), "--quiet"], check=True, capture_output=True,
                   start_new_session=True)
    return train_images_per_s(out)


def train_lab(port: int, text: str, run: Path) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("POST", "/api/runs", body=json.dumps({"yaml": text, "name": run.name}),
                       headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 201, answer.read()
    answer.read()
    while not (run / rundir.RESULTS).exists():
        time.sleep(0.5)
    time.sleep(1)  # the process writes its pictures after results.json
    return train_images_per_s(run)


def bench_training(port: int, runs: Path, folder: Path, rounds: int, limit: int) -> dict:
    """Pairs in alternating order (CLI then lab, lab then CLI, ...), so that a machine
    getting busier or quieter favours neither."""
    text = training_config(limit)
    config = folder / "speed.yaml"
    config.write_text(text)
    cli, lab = [], []
    for k in range(rounds):
        pair = [lambda k=k: cli.append(train_cli(config, folder / f"cli-{k}")),
                lambda k=k: lab.append(train_lab(port, text, runs / f"lab-{k}"))]
        for run in pair if k % 2 == 0 else reversed(pair):
            run()
    ratios = [a / b for a, b in zip(lab, cli, strict=True)]
    return {"cli_images_per_s": cli, "lab_images_per_s": lab,
            "lab_over_cli_median": statistics.median(ratios),
            "lab_over_cli_of_medians": statistics.median(lab) / statistics.median(cli),
            "train_images": limit}


def bench_progress_file(folder: Path, steps: int = 20000) -> dict:
    """What the lab adds to every training step: the progress file's check (and its
    rewrite, at most once a second), timed on the tally alone, with and without it."""
    import os

    import torch

    from cnnzoo.training.progress import PROGRESS_FILE, EpochTally, Progress
    from cnnzoo.training.state import Position

    def per_step(path: str | None) -> float:
        if path is None:
            os.environ.pop(PROGRESS_FILE, None)
        else:
            os.environ[PROGRESS_FILE] = path
        progress = Progress(True, 10)
        progress.tty = False
        progress.start_epoch(0, steps, 0)
        tally = EpochTally(Position(), 0, torch.device("cpu"), progress, 1, "")
        start = time.perf_counter()
        for batch in range(1, steps + 1):
            tally.add_loss(1.0, (batch, batch, 128, 0.1))
        return (time.perf_counter() - start) / steps

    without = statistics.median(per_step(None) for _ in range(5))
    with_file = statistics.median(per_step(str(folder / "progress.json")) for _ in range(5))
    os.environ.pop(PROGRESS_FILE, None)
    return {"step_us_without": without * 1e6, "step_us_with": with_file * 1e6,
            "added_us_per_step": (with_file - without) * 1e6}
