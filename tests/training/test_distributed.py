"""Data-parallel training in real processes: torchrun and `cnnzoo train --nproc`, with
gloo on the CPU, on fake files in the real formats and on the real Fashion-MNIST.

What is guaranteed, and what each test holds the code to:
- A 2-process run that is interrupted (SIGTERM, a killed process) and resumed ends with
  exactly the weights of an uninterrupted 2-process run: bitwise, on any CPU.
- A 2-process run equals a 1-process run only up to float rounding: each process sums
  its half of the batch in the backward GEMMs and the halves are added after, where one
  process sums all 32 images in one GEMM. The kernels (oneDNN, MKL, per instruction set)
  choose the order, so the last bits differ by CPU.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.data.idx import write_idx
from cnnzoo.data.pipeline import FolderSplit, Split
from cnnzoo.errors import CnnzooError, ConfigError
from cnnzoo.layers.shapes import Volume
from cnnzoo.runs.checkpoint import load_state, load_weights
from cnnzoo.runs.predictions import read_predictions
from cnnzoo.training.distributed import Distributed, check_nproc, threads_per_process
from cnnzoo.training.trainer import fit
from tests.helpers.common import FASHION_DIR, run_process, write
from tests.helpers.datafiles import write_folder

# Every test here starts torchrun and its worker processes.
pytestmark = pytest.mark.slow

# No batchnorm, no dropout, no augmentation: nothing in a step depends on how the batch
# is split. The data is noise with random labels, which the network can only slowly
# memorise, and the learning rate is constant: every step moves the weights by about
# 1e-3 to the end, so a step lost, repeated or resumed at the wrong place shows.
CONFIG = """
model:
  layers:
    - conv: {{filters: 8, kernel: 3, padding: same, activation: {activation}}}
    - pool: {{kind: {pool}, size: 4}}
    - fc: 10
data: {{dataset: fashion_mnist, val_split: 0.1}}
train:
  epochs: {epochs}
  batch_size: 32
  optimizer: {{name: sgd, lr: 0.02, momentum: 0.9, weight_decay: 0.01}}
  precision: fp32  # auto is bf16 on CPUs with native bf16, whose rounding swamps 1e-5
"""
STEPS = 56  # per epoch: 1,800 training images (2,000 less val_split) in batches of 32
LONG = 4  # epochs: time to signal a process after the first epoch's checkpoint


def config_text(epochs: int, activation: str = "relu", pool: str = "max") -> str:
    return CONFIG.format(epochs=epochs, activation=activation, pool=pool)


# 1 against 2 processes. ReLU and max pooling are not smooth: once the rounding
# difference (a few ulps) decides which of two nearly equal values wins a max-pool window
# or which side of zero a ReLU input falls, that step's update differs by ~1e-4 and the
# runs drift apart. Measured on a Zen 4 here: 1.6e-7 after 1, 2 and 3 epochs, then 1.6e-3
# after 4 (the loss curves part at step 186); emulated 1-vs-2 in one process, the first
# max-pool flip came at step 327. So no tolerance small enough to catch a lost step holds
# for a ReLU/max-pool run on every CPU. The comparison therefore trains the same layers
# with tanh and average pooling, which have no branch for a rounding difference to flip:
# the difference then stays at float rounding (measured here at the avx2, avx512 and
# native levels: at most 3.0e-7 after 56 steps and 3.7e-7 after 224), and 1e-5 still
# catches a wrong shard, a missing gradient average or a lost or repeated step (3e-3).
SMOOTH = {"activation": "tanh", "pool": "avg"}
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}

needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="finding worker processes reads /proc")


def write_noise_mnist(root: Path, n_train: int = 2000, n_test: int = 200) -> None:
    """Fashion-MNIST's IDX files holding uniform noise with random labels."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28),
                                                                    dtype=np.uint8))
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_noise_mnist(root)
    return root


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Train in this process on one thread: on a machine whose cores are busy, the
    second OpenMP thread waits for a core at every operation and makes training many
    times slower (measured: 64 s against 3.6 s for an epoch of the mlp config)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def assert_close_weights(run: Path, expected: dict[str, torch.Tensor]) -> None:
    weights = load_weights(run / "model.safetensors")[0]
    assert weights.keys() == expected.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], expected[name], **TOLERANCE, msg=name)


def assert_equal_weights(run: Path, expected: dict[str, torch.Tensor]) -> None:
    weights = load_weights(run / "model.safetensors")[0]
    assert weights.keys() == expected.keys()
    for name in weights:
        assert torch.equal(weights[name], expected[name]), (
            name, (weights[name] - expected[name]).abs().max().item())


def torchrun(log: Path, *args: str | Path, options: tuple[str, ...] = ()) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node=2 [options] -m cnnzoo ARGS`, output to `log`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *options, "-m", "cnnzoo", *map(str, args)]
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def two_long(tmp_path_factory, data_root) -> dict[str, torch.Tensor]:
    """The weights of the LONG config trained by torchrun in 2 processes, uninterrupted."""
    base = tmp_path_factory.mktemp("two")
    config = write(base / "long.yaml", config_text(LONG))
    log = base / "log.txt"
    code = torchrun(log, "train", "-c", config, "--data-root", data_root, "-o",
                    base / "run").wait(timeout=600)
    assert code == 0, log.read_text()[-3000:]
    return load_weights(base / "run" / "model.safetensors")[0]


def workers(root: int) -> dict[int, int]:
    """{rank: pid} of the training processes below process `root`."""
    found: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
        if rank is not None and _descends(ppid, root):
            found[rank] = int(proc.name)
    return found


def _descends(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {path.name} was "
                        f"written:\n{log.read_text()[-3000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no {path.name} after {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


def signal_rank(proc: subprocess.Popen, rank: int, signum: int) -> None:
    pids: dict[int, int] = {}
    end = time.monotonic() + 30
    while rank not in pids and time.monotonic() < end:
        pids = workers(proc.pid)
    os.kill(pids[rank], signum)


def run_files(run: Path) -> list[str]:
    """The names of a run's files; event files are named after the time and the pid."""
    return sorted(re.sub(r"tfevents\..*", "tfevents", p.name) for p in run.iterdir())


def step_numbers(run: Path) -> list[int]:
    with open(run / "steps.csv") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def test_two_processes_train_like_one(tmp_path, data_root, cli):
    config = write(tmp_path / "short.yaml", config_text(1, **SMOOTH))
    with one_thread():
        fit(cnnzoo.load_config(config), out=tmp_path / "one", data_root=str(data_root),
            show_progress=False)

    two = tmp_path / "two"
    # Batches of 32 share the 200 test images out as 7 batches, 4 and 3 a process.
    result = run_process("train", "-c", config, "--data-root", data_root, "-o", two,
                         "--nproc", "2", "--set", "train.eval_batch_size=32", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "x 2 processes" in result.out
    assert result.out.count("epoch 1/1") == 1  # only rank 0 reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "short.yaml", "two"]
    assert run_files(two) == run_files(tmp_path / "one")
    assert_close_weights(two, load_weights(tmp_path / "one" / "model.safetensors")[0])
    assert step_numbers(two) == list(range(1, STEPS + 1))

    results = json.loads((two / "results.json").read_text())
    assert results["processes"] == 2 and results["steps"] == STEPS
    # The test split was shared out between the processes and summed back: every image
    # counted once, as a single-process evaluation of the same weights counts them.
    alone = cli("eval", two, "--json", "--data-root", data_root, "--predictions",
                tmp_path / "alone.npz")
    assert alone.code == 0, alone.err
    evaluated = json.loads(alone.out)
    assert results["test_samples"] == evaluated["samples"] == 200
    assert results["test_accuracy"] == evaluated["accuracy"]
    assert results["test_loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    # The per-image predictions came back from the two shares in the split's order.
    kept = read_predictions(two / "predictions.npz")
    alone_kept = read_predictions(tmp_path / "alone.npz")
    assert np.array_equal(kept.labels, alone_kept.labels) and len(kept) == 200
    assert np.array_equal(kept.predicted, alone_kept.predicted)
    assert np.array_equal(kept.top_scores, alone_kept.top_scores)


@needs_proc
def test_sigterm_to_one_process_stops_all_then_resume_finishes(tmp_path, data_root,
                                                               two_long):
    config = write(tmp_path / "long.yaml", config_text(LONG))
    run, log = tmp_path / "run", tmp_path / "log.txt"
    proc = torchrun(log, "train", "-c", config, "--data-root", data_root, "-o", run)
    wait_for(run / "state.pt", proc, log)  # the first epoch's checkpoint
    signal_rank(proc, 1, signal.SIGTERM)
    code = proc.wait(timeout=120)
    output = log.read_text()
    assert code != 0, output
    assert "SIGTERM received: stopping after this step" in output
    assert output.count("SIGTERM: stopped at epoch") == 1, output  # rank 0 says it
    assert f"Resume with: cnnzoo train --resume {run}" in output and " --nproc 2 " in output
    assert not (run / "results.json").exists()
    # Rank 0 wrote one checkpoint at the step where both processes stopped.
    position = load_state(run / "state.pt")["position"]
    stopped = position["step"]
    assert STEPS <= stopped < LONG * STEPS
    assert f"stopped at epoch {position['epoch'] + 1}, step {position['batch']}" in output

    resumed = run_process("train", "--resume", run, "--data-root", data_root, "--nproc", "2")
    assert resumed.code == 0, resumed.err
    assert f"resuming at epoch {position['epoch'] + 1}, step {position['batch']}" in resumed.out
    assert step_numbers(run) == list(range(1, LONG * STEPS + 1))
    assert json.loads((run / "results.json").read_text())["steps"] == LONG * STEPS
    assert_equal_weights(run, two_long)


@needs_proc
def test_killed_process_is_restarted_and_resumes_from_the_checkpoint(tmp_path, data_root,
                                                                    two_long):
    config = write(tmp_path / "long.yaml", config_text(LONG))
    run, log = tmp_path / "run", tmp_path / "log.txt"
    proc = torchrun(log, "train", "-c", config, "--data-root", data_root, "-o", run,
                    options=("--max-restarts=1",))
    wait_for(run / "state.pt", proc, log)
    signal_rank(proc, 1, signal.SIGKILL)
    code = proc.wait(timeout=180)
    output = log.read_text()
    assert code == 0, output
    assert "resuming at epoch" in output
    with open(run / "metrics.csv") as handle:
        rows = [(int(r["epoch"]), r["split"]) for r in csv.DictReader(handle)]
    expected = [(e, split) for e in range(1, LONG + 1) for split in ("train", "val")]
    assert rows == [*expected, (LONG, "test")]
    assert step_numbers(run) == list(range(1, LONG * STEPS + 1))
    assert_equal_weights(run, two_long)


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_two_processes_match_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    overrides = ["train.epochs=1", "data.download=false"]
    with one_thread():
        fit(cnnzoo.load_config("mlp", overrides), out=tmp_path / "one", show_progress=False,
            callbacks=[])
    options = [x for o in overrides for x in ("--set", o)]
    two = run_process("train", "-c", "mlp", *options, "-q", "-o", tmp_path / "two",
                      "--nproc", "2",
                      env={"XDG_CACHE_HOME": str(tmp_path / "empty-cache")})
    assert two.code == 0, two.err
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert b["processes"] == 2 and b["test_samples"] == a["test_samples"] == 10_000
    assert a["steps"] == b["steps"]  # the same global batch
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.01, (a["test_accuracy"],
                                                                  b["test_accuracy"])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize(("n", "batch"), [(1, 8), (10, 3), (100, 7), (1000, 64)])
def test_evaluation_shares_count_every_image_once(world, n, batch):
    split = Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n))
    seen = [label for rank in range(world)
            for _, labels in split.eval_batches(batch, rank, world) for label in labels.tolist()]
    assert sorted(seen) == list(range(n))


def test_folder_evaluation_shares_count_every_image_once(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=5, size=8, with_test=False)
    samples = [(p, i) for i, p in enumerate(sorted(root.rglob("*.png")))]
    split = FolderSplit(samples, Volume(8, 8, 3), workers=0)
    seen = [label for rank in range(2)
            for _, labels in split.eval_batches(4, rank, 2) for label in labels.tolist()]
    assert sorted(seen) == list(range(15))


@pytest.mark.parametrize("world", [2, 4])
def test_training_shares_make_up_the_global_batch(world):
    split = Split(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100))
    alone = [labels.tolist() for _, labels in split.train_batches(32, seed=3, epoch=1)]
    shares = [[labels.tolist() for _, labels in split.train_batches(32, seed=3, epoch=1,
                                                                     rank=r, world=world)]
              for r in range(world)]
    for step, batch in enumerate(alone):
        parts = [shares[r][step] for r in range(world)]
        assert all(len(p) == 32 // world for p in parts)
        assert sorted(label for part in parts for label in part) == sorted(batch)


BATCHNORM = """
model: {layers: [conv: {filters: 4, padding: same}, batchnorm, relu, pool: 4, fc: 10]}
data: {dataset: fashion_mnist}
train:
  batch_size: 32
  sync_batchnorm: true
"""


def test_sync_batchnorm_is_refused_on_the_cpu(tmp_path, cli):
    config = write(tmp_path / "bn.yaml", BATCHNORM)
    result = cli("train", "-c", config, "--nproc", "2", "--device", "cpu", "-o", tmp_path / "r")
    assert result.code == 2
    assert result.err.startswith(f"error: {config}: train at line 6: sync_batchnorm needs GPUs")
    assert "set train.sync_batchnorm: false" in result.err
    assert not (tmp_path / "r").exists()
    loaded = cnnzoo.load_config(config)
    with pytest.raises(ConfigError):
        Distributed(rank=1, world=2).check_sync_batchnorm(loaded, torch.device("cpu"))
    Distributed().check_sync_batchnorm(loaded, torch.device("cpu"))  # one process: no effect
    off = cnnzoo.load_config(config, ["train.sync_batchnorm=false"])
    Distributed(rank=0, world=2).check_sync_batchnorm(off, torch.device("cpu"))


def test_pytorch_syncbatchnorm_still_needs_a_gpu():
    """The reason for the refusal above; when PyTorch runs it on the CPU, lift it."""
    import torch.distributed as torch_dist

    torch_dist.init_process_group("gloo", store=torch_dist.HashStore(), rank=0, world_size=1)
    try:
        norm = nn.SyncBatchNorm(3).train()
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            norm(torch.randn(4, 3, 2, 2))
    finally:
        torch_dist.destroy_process_group()


def test_sync_batchnorm_converts_every_batchnorm_and_keeps_the_weights():
    model = cnnzoo.build_model(cnnzoo.parse_config(
        "model: {layers: [input: {width: 8, height: 8, depth: 1}, conv: 4, batchnorm, relu, "
        "fc: 6, batchnorm, fc: 2]}"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = Distributed(rank=0, world=2).prepare(model, sync_batchnorm=True)
    kinds = [type(m) for m in converted.modules()]
    assert kinds.count(nn.SyncBatchNorm) == 2 and nn.BatchNorm2d not in kinds
    after = converted.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    alone = Distributed().prepare(cnnzoo.build_model(cnnzoo.parse_config(
        "model: {layers: [input: {width: 2, height: 2, depth: 1}, batchnorm]}")), True)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in alone.modules())


@pytest.mark.parametrize(("cores", "nproc", "threads"), [(2, 2, 1), (16, 3, 5), (1, 4, 1),
                                                         (8, 1, 8)])
def test_threads_per_process_share_the_cores(monkeypatch, cores, nproc, threads):
    monkeypatch.setattr("cnnzoo.training.distributed.available_cores", lambda: cores)
    assert threads_per_process(nproc) == threads


@pytest.mark.parametrize(("job", "attempt", "recorded", "continues"), [
    ("8f2c", 0, "8f2c", True),  # another node restarted: this node's count did not change
    ("8f2c", 1, "8f2c", True),
    ("8f2c", 1, "other", False),  # a run begun by another torchrun job
    ("none", 0, "none", False),  # torchrun's default id, no restart: a new job
    ("none", 1, "none", True),
    (None, 0, None, False),  # not under torchrun
])
def test_a_restart_continues_only_its_own_run(tmp_path, job, attempt, recorded, continues):
    (tmp_path / "run.json").write_text(json.dumps({"torchrun_job": recorded}))
    assert Distributed(attempt=attempt, job=job).continues(tmp_path) is continues
    assert not Distributed(attempt=1, job=job).continues(tmp_path / "missing")
    (tmp_path / "results.json").write_text("{}")  # a finished run is never continued
    assert not Distributed(attempt=attempt, job=job).continues(tmp_path)


def test_nproc_under_torchrun_is_refused(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    config = write(tmp_path / "c.yaml", config_text(1))
    result = cli("train", "-c", config, "--nproc", "2", "-o", tmp_path / "run")
    assert result.code == 2
    assert result.err.startswith("[rank 1] error: --nproc starts torchrun itself")
    assert not (tmp_path / "run").exists()


def test_nproc_needs_a_gpu_per_process(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_nproc(2, torch.device("cuda"))
    check_nproc(8, torch.device("cpu"))
    with pytest.raises(CnnzooError, match="--nproc 3 needs a GPU per process but this machine "
                                          "has 2; use --nproc 2"):
        check_nproc(3, torch.device("cuda"))
    with pytest.raises(CnnzooError, match="not mps"):
        check_nproc(2, torch.device("mps"))
