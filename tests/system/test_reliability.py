"""What cnnzoo promises when things go wrong: untrusted files and configs, interrupted
and diverging training, crashes and full disks in the middle of a save, and data
or weights that do not fit. docs/reliability.md lists each promise with its test.

The trainings are tiny (a 4-filter conv on 240 fake MNIST images, 9 steps an
epoch) with dropout, augmentation and a warm-up cosine schedule switched on, so
that every source of randomness has to be restored for a resumed run to match.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.errors import CheckpointError, CnnzooError, DataError
from cnnzoo.runs.checkpoint import load_state, load_weights, parse_weights, save_weights
from cnnzoo.training import trainer
from cnnzoo.training.callbacks import Callback
from cnnzoo.training.progress import StepLosses
from cnnzoo.training.stopping import Diverged, Interrupted
from cnnzoo.training.trainer import fit
from cnnzoo.utils.files import atomic_write_bytes, atomic_write_with
from tests.helpers.common import ROOT, slow_cases, write
from tests.helpers.datafiles import pixel_bomb_png, write_cifar10, write_folder, write_mnist

TINY = """
model:
  layers:
    - conv: {filters: 4, kernel: 3, padding: same, activation: relu}
    - pool: 4
    - dropout: 0.2
    - fc: 10
data:
  dataset: fashion_mnist
  val_split: 0.1
  augment: {crop: 2, flip: true, erase: 0.5}
train:
  epochs: 3
  batch_size: 24
  optimizer: {name: sgd, lr: 0.05}
  scheduler: {name: cosine, warmup_epochs: 0.5}
"""
STEPS_PER_EPOCH = 9  # 240 images, 10% held out: 216 / 24
TOTAL_STEPS = 3 * STEPS_PER_EPOCH
USER_ERROR = 2


# ---- shared runs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, here and in the processes these tests start: the tiny networks run
    several times faster on a busy machine, and results match across processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's pictures are by-products that never change training; skip them."""
    monkeypatch.setattr(trainer, "default_callbacks", lambda: [])


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def data_root(work: Path) -> Path:
    write_mnist(work / "data", n_train=240, n_test=40)
    return work / "data"


@pytest.fixture(scope="module")
def config_file(work: Path) -> Path:
    return write(work / "tiny.yaml", TINY)


def train(config: cnnzoo.ExperimentConfig, data_root: Path, **kwargs) -> Path:
    """`fit` without pictures (they do not change training and cost time)."""
    kwargs.setdefault("callbacks", [])
    return fit(config, data_root=str(data_root), show_progress=False, **kwargs).run_dir


@pytest.fixture(scope="module")
def straight(work: Path, data_root: Path, config_file: Path) -> Path:
    """The reference: all 27 steps in one go."""
    return train(cnnzoo.load_config(config_file), data_root, out=work / "straight")


@pytest.fixture(scope="module")
def interrupted(work: Path, data_root: Path, config_file: Path, tmp_path_factory):
    """A fresh copy of the run stopped after global step `n` (cached per `n`)."""
    cache: dict[int, Path] = {}

    def make(n: int) -> Path:
        if n not in cache:
            with pytest.raises(Interrupted):
                train(cnnzoo.load_config(config_file), data_root, out=work / f"stopped-{n}",
                      stop_after_steps=n)
            cache[n] = work / f"stopped-{n}"
        copy = tmp_path_factory.mktemp(f"stopped-{n}") / "run"
        shutil.copytree(cache[n], copy)
        return copy

    return make


def weights_of(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "model.safetensors")[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def assert_same_training(run: Path, reference: Path) -> None:
    """Bitwise the same weights, the same steps (loss and lr of every step), the same
    metrics but for the timings, and the same test result."""
    assert_same_weights(run, reference)
    assert (run / "steps.csv").read_text() == (reference / "steps.csv").read_text()
    timeless = [
        [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
         for row in cnnzoo.runs.rundir.read_metrics(r)] for r in (run, reference)
    ]
    assert timeless[0] == timeless[1]
    results = [json.loads((r / "results.json").read_text()) for r in (run, reference)]
    assert results[0]["test_loss"] == results[1]["test_loss"]
    assert results[0]["steps"] == results[1]["steps"] == TOTAL_STEPS


def step_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "steps.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("model.safetensors", "state.pt")}


@contextlib.contextmanager
def memory_guard(extra: int = 2 * 2**30):
    """Cap this process's address space at its current size plus `extra`, so that a
    regression that allocates gigabytes fails with MemoryError instead of exhausting the
    machine."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- 1. untrusted checkpoint files


class RunsCode:
    """A pickle payload: unpickling it calls `func(arg)`."""

    def __init__(self, func, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def evil_state(path: Path, marker: Path, flavour: str) -> None:
    touch = f"touch {marker}"
    if flavour == "torch_zip_os_system":
        torch.save({"step": 1, "x": RunsCode(os.system, touch)}, path)
    elif flavour == "torch_zip_exec":
        torch.save({"step": 1, "x": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w')")},
                   path)
    else:  # a bare pickle, as torch.save wrote before its zip format
        path.write_bytes(pickle.dumps({"step": 1, "x": RunsCode(os.system, touch)}, protocol=2))


FLAVOURS = ["torch_zip_os_system", "torch_zip_exec", "bare_pickle"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_state_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, flavour):
    marker = tmp_path / "MARKER"
    evil_state(tmp_path / "state.pt", marker, flavour)
    with pytest.raises(CheckpointError) as refused:
        load_state(tmp_path / "state.pt")
    message = str(refused.value)
    assert f"refused to load {tmp_path / 'state.pt'}" in message
    assert "never runs code" in message
    assert "weights_only" not in message  # no advice to switch the protection off
    if flavour == "torch_zip_os_system":
        assert "posix.system" in message or "os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize("flavour", ["torch_zip_os_system", "bare_pickle"])
def test_resume_refuses_a_state_that_would_run_code(tmp_path, cli, interrupted, data_root,
                                                    flavour):
    run = interrupted(13)
    marker = tmp_path / "MARKER"
    evil_state(run / "state.pt", marker, flavour)
    result = cli("train", "--resume", run, "--data-root", data_root)
    assert result.code == USER_ERROR, result.err
    assert result.err.startswith("error: refused to load") and result.err.count("\n") == 1
    assert not marker.exists()


class Smallest(torch.nn.Module):
    """A weight and a 0-d buffer (like batchnorm's num_batches_tracked): a small file
    with every kind of header entry."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.5, -2.0, 0.25]))
        self.register_buffer("n", torch.tensor(7))


def test_every_single_bit_flip_in_a_weights_file_is_caught(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(Smallest(), path, {"name": "tiny"})
    good = path.read_bytes()
    assert load_weights(path)[0]["n"].shape == ()
    for index in range(len(good)):
        for bit in range(8):
            with pytest.raises(CheckpointError, match=r"^corrupt checkpoint"):
                parse_weights(_flip(good, index, bit), path)  # load_weights, from memory


def _rewrite_header(data: bytes, edit) -> bytes:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    first = sorted(k for k in json.loads(data[8:8 + size]) if k != "__metadata__")[0]

    def grow_shape(header):
        header[first]["shape"][-1] += 1

    def shift_offsets(header):
        header[first]["data_offsets"] = [o + 4 for o in header[first]["data_offsets"]]

    def swap_same_size(header):  # consistent offsets, but each tensor gets the other's bytes
        names = sorted(k for k in header if k != "__metadata__")
        a, b = names[0], next(n for n in names[1:] if header[n]["shape"] == header[names[0]][
            "shape"])
        header[a]["data_offsets"], header[b]["data_offsets"] = (header[b]["data_offsets"],
                                                                header[a]["data_offsets"])

    damaged = {
        "truncated": lambda: data[: len(data) - 100],
        "data_bit": lambda: _flip(data, len(data) - 3, 2),
        "header_bit": lambda: _flip(data, 8 + size // 2, 0),
        "header_claims_more": lambda: (size + 10**6).to_bytes(8, "little") + data[8:],
        "header_shape_lies": lambda: _rewrite_header(data, grow_shape),
        "header_offsets_lie": lambda: _rewrite_header(data, shift_offsets),
        "header_swaps_tensors": lambda: _rewrite_header(data, swap_same_size),
    }[how]()
    path.write_bytes(damaged)


def _flip(data: bytes, index: int, bit: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


DAMAGES = ["truncated", "data_bit", "header_bit", "header_claims_more", "header_shape_lies",
           "header_offsets_lie", "header_swaps_tensors"]


@pytest.fixture(scope="module")
def twin_run(work, data_root):
    """A run with two tensors of one shape (two convs' biases), for the header that
    swaps them."""
    config = cnnzoo.parse_config(TINY.replace(
        "    - pool: 4\n", "    - conv: {filters: 4, kernel: 3, padding: same}\n    - pool: 4\n"))
    with pytest.raises(Interrupted):
        train(config, data_root, out=work / "twin", stop_after_steps=3)
    return work / "twin"


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_weights_are_a_corrupt_checkpoint(tmp_path, cli, interrupted, twin_run,
                                                  data_root, how, command):
    if how == "header_swaps_tensors":
        run = tmp_path / "run"
        shutil.copytree(twin_run, run)
    else:
        run = interrupted(13)
    _damage(run / "model.safetensors", how)
    before = snapshot(run)
    args = (("eval", run) if command == "eval" else ("train", "--resume", run))
    result = cli(*args, "--data-root", data_root)
    assert result.code == USER_ERROR, result.err
    assert result.err.startswith(f"error: corrupt checkpoint {run / 'model.safetensors'}")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert snapshot(run) == before  # nothing was written over the evidence


def test_damaged_training_state_is_a_corrupt_checkpoint(tmp_path, cli, interrupted, data_root):
    run = interrupted(13)
    good = (run / "state.pt").read_bytes()
    rng = random.Random(0)
    damaged = tmp_path / "state.pt"
    for _ in range(150):
        damaged.write_bytes(_flip(good, rng.randrange(len(good)), rng.randrange(8)))
        try:
            load_state(damaged)
        except CheckpointError as exc:
            assert str(exc).startswith(("corrupt checkpoint", "refused to load")), exc
        else:  # only a flip in bytes torch never reads (zip padding, names) may load,
            # and then the content must be exactly the saved one
            assert cnnzoo.runs.checkpoint.state_digest(load_state(damaged)) == \
                cnnzoo.runs.checkpoint.state_digest(load_state(run / "state.pt"))
    (run / "state.pt").write_bytes(good[: len(good) // 2])
    result = cli("train", "--resume", run, "--data-root", data_root)
    assert result.code == USER_ERROR
    assert result.err.startswith(f"error: corrupt checkpoint {run / 'state.pt'}")


def test_a_state_whose_content_was_edited_is_refused(tmp_path, interrupted):
    run = interrupted(13)
    state = torch.load(run / "state.pt", weights_only=True)
    state["position"]["step"] += 1  # a plausible edit: the loader alone would accept it
    torch.save(state, run / "state.pt")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_state(run / "state.pt")


# ---- 2. untrusted configs


def _billion_laughs() -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\nmodel: {layers: [relu]}\n"


HOSTILE = {
    "billion_laughs": _billion_laughs(),
    "quadratic_blowup": "a: &a [" + ",".join(["x"] * 9000) + "]\nb: [" + ",".join(["*a"] * 99)
    + "]\n",
    "alias_inside_itself": "model: &m {layers: [relu, *m]}\n",
    "merge_of_itself": "train: &t {<<: *t}\n",
    "flat_list_of_400k": "x: [" + ",".join(["1"] * 400_000) + "]\n",
    "block_list_of_200k": "x:\n" + "- 1\n" * 200_000,
    "100k_documents": "---\na: 1\n" * 100_000,
    "deep_flow": "x: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "deep_block": "".join(" " * i + f"k{i}:\n" for i in range(500)) + " " * 500 + "v: 1\n",
    "over_1_mib": "# " + "x" * (1 << 20) + "\n",
    "4400_digit_int": "x: " + "9" * 4400 + "\n",
    "python_apply": "x: !!python/object/apply:os.system ['touch MARKER']\n",
    "python_name": "x: !!python/name:os.system\n",
    "python_module": "x: !!python/module:os\n",
    "python_new": "x: !!python/object/new:subprocess.Popen [['touch', 'MARKER']]\n",
}


@pytest.mark.parametrize("name", slow_cases(list(HOSTILE), "quadratic_blowup", "deep_flow"))
def test_hostile_configs_are_refused_quickly_in_little_memory(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    text = HOSTILE[name]
    tracemalloc.start()
    # CPU time of this process, not wall-clock time: on a machine shared with other
    # work, the wall-clock time of the same refusal was measured at 17 s.
    start = time.process_time()
    try:
        with pytest.raises(cnnzoo.ConfigError):
            cnnzoo.parse_config(text)
        elapsed = time.process_time() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Guards against a blow-up (expanding 9**9 values, parsing 400k nodes in Python,
    # recursing forever), not benchmarks: the refusals take milliseconds.
    assert elapsed < 10, f"{elapsed:.1f}s"
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert not (tmp_path / "MARKER").exists()


def test_a_config_file_that_never_ends_is_refused(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(cnnzoo.ConfigError, match="over the 1,048,576-byte limit"):
        cnnzoo.load_config(Path("/dev/zero"))


@pytest.mark.parametrize(("override", "named"), [
    ("train.optimizer.name=torch.optim.SGD", "Received: name='torch.optim.SGD'"),
    ("train.optimizer={name: torch.optim.SGD}", "Received: name='torch.optim.SGD'"),
    ("train.scheduler.name=torch.optim.lr_scheduler.StepLR", "'torch.optim.lr_scheduler.Step"),
    ("train.loss.name=torch.nn.MSELoss", "'torch.nn.MSELoss'"),
    ("train.device=os.system", "'os.system'"),
    ("train.precision=torch.float64", "'torch.float64'"),
    ("data.dataset=os.system", "'os.system'"),
    ("data.dataset=MNIST", "'MNIST'"),  # torchvision's class name, not a dataset name
    ("model.layers.1=__import__", "unknown layer type '__import__'"),
    ("model.layers.1={torch.nn.Conv2d: {}}", "unknown layer type 'torch.nn.Conv2d'"),
    ("model.layers.1={conv: {filters: 4, impl: __import__}}", "'__import__'"),
    ("model.layers.0.conv.activation=builtins.eval", "'builtins.eval'"),
    ("model.layers.0.conv.weights=os.system", "os.system"),
    ("model.layers.0.conv.padding_mode=os.system", "'os.system'"),
    ("model.layers.0.conv.filters=__import__('os').system('touch MARKER')", "__import__"),
])
def test_no_config_value_names_a_python_object(tmp_path, monkeypatch, override, named):
    """Every value that picks something (an optimizer, a dataset, a layer, an
    activation) is looked up in a table of cnnzoo's own; nothing is imported."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cnnzoo.ConfigError) as refused:
        cnnzoo.parse_config(TINY, [override])
    assert named in str(refused.value)
    assert not (tmp_path / "MARKER").exists()


def test_the_source_never_evaluates_or_unpickles_user_input():
    """No eval/exec/__import__/import_module, no unsafe YAML or pickle loading, and
    torch.load only with weights_only=True, anywhere in cnnzoo."""
    import ast

    problems = []
    for path in sorted((ROOT / "src" / "cnnzoo").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{path.relative_to(ROOT)}:{node.lineno} {name}"
            if name in ("eval", "exec", "compile", "__import__", "importlib.import_module",
                        "import_module", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                        "pickle.load", "pickle.loads", "marshal.loads", "dill.load"):
                problems.append(where)
            if name == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in node.keywords)
                if not safe:
                    problems.append(f"{where} without weights_only=True")
            if name.endswith("Unpickler") and "sources.py" not in path.name:
                problems.append(where)
    assert problems == []


# ---- 3. interrupts in a real process


def _start_training(config_file: Path, data_root: Path, out: Path, log: Path):
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "cnnzoo", "train", "-c", str(config_file), "--data-root",
             str(data_root), "-o", str(out)],
            stdout=handle, stderr=subprocess.STDOUT, env=ONE_THREAD, cwd=ROOT,
        )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [pytest.param(signal.SIGINT, 130, id="SIGINT"),
                                          pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_a_signal_stops_training_with_a_checkpoint_and_resume_finishes_it(
    tmp_path, cli, config_file, data_root, straight, sig, code
):
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    proc = _start_training(config_file, data_root, out, log)
    try:
        _wait_for(out / "steps.csv", proc)  # written at the end of the first epoch
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert "Traceback" not in output
    resume = f"cnnzoo train --resume {out} --data-root {data_root}"
    assert f"Resume with: {resume}\n" in output, output
    state = load_state(out / "state.pt")  # a loadable checkpoint, at a step boundary
    stopped_at = state["step"]
    assert STEPS_PER_EPOCH <= stopped_at < TOTAL_STEPS
    assert [int(r["step"]) for r in step_rows(out)] == list(range(1, stopped_at + 1))

    result = cli(*resume.split()[1:])  # the command it printed, as printed
    assert result.code == 0, result.err
    rows = step_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, TOTAL_STEPS + 1))  # none twice
    assert [(int(r["epoch"]), int(r["batch"])) for r in rows] == [
        (e, b) for e in range(1, 4) for b in range(1, STEPS_PER_EPOCH + 1)]
    assert_same_training(out, straight)


# ---- 4. exact resume


class SignalAtEpochEnd(Callback):
    """Sends the process a signal at the end of one epoch, as a user might."""

    def __init__(self, epoch: int, sig: int) -> None:
        self.epoch, self.sig = epoch, sig

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            signal.raise_signal(self.sig)


@pytest.mark.parametrize("stop", ["mid_epoch", "last_step_of_epoch", "signal_at_epoch_end"])
def test_interrupted_and_resumed_equals_straight(tmp_path, config_file, data_root, straight,
                                                 stop):
    config = cnnzoo.load_config(config_file)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as stopped:
        if stop == "signal_at_epoch_end":
            train(config, data_root, out=out, callbacks=[SignalAtEpochEnd(0, signal.SIGTERM)])
        else:
            n = 13 if stop == "mid_epoch" else STEPS_PER_EPOCH
            train(config, data_root, out=out, stop_after_steps=n)
    expected_step = 13 if stop == "mid_epoch" else STEPS_PER_EPOCH
    assert load_state(out / "state.pt")["step"] == expected_step
    assert stopped.value.exit_code == (143 if stop == "signal_at_epoch_end" else 130)
    train(cnnzoo.load_config(out / "config.yaml"), data_root, resume=out)
    assert_same_training(out, straight)


def test_resume_with_a_changed_seed_batch_size_and_model_names_them_all(cli, interrupted,
                                                                        data_root):
    run = interrupted(13)
    before = snapshot(run)
    result = cli("train", "--resume", run, "--data-root", data_root, "--set", "train.seed=1",
                 "--set", "train.batch_size=12", "--set", "model.layers.0.conv.filters=8")
    assert result.code == USER_ERROR
    for key in ("train.seed (0 -> 1)", "train.batch_size (24 -> 12)", "model.layers"):
        assert key in result.err, result.err
    assert snapshot(run) == before


# ---- 5. atomic writes


def _kill_while_writing(path: Path, data: bytes, written: int) -> None:
    """Fork a child that writes `data` to `path` atomically but stops after `written`
    bytes (before the rename), and SIGKILL it there."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            def stall(handle):
                handle.write(data[:written])
                handle.flush()
                os.write(ready_w, b"x")
                time.sleep(60)
                handle.write(data[written:])

            atomic_write_with(path, stall)
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("written", ["half", "all_but_the_rename"])
def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_checkpoint(tmp_path, written):
    old_model, new_model = torch.nn.Linear(30, 20), torch.nn.Linear(30, 20)
    path = tmp_path / "model.safetensors"
    save_weights(old_model, path)
    old = path.read_bytes()
    new = cnnzoo.runs.checkpoint.weights_bytes(new_model)
    _kill_while_writing(path, new, len(new) // 2 if written == "half" else len(new))

    assert path.read_bytes() == old  # intact, and loadable
    assert torch.equal(load_weights(path)[0]["weight"], old_model.weight.detach())
    leftovers = temp_files(tmp_path)
    assert [p.name.startswith(".model.safetensors.") for p in leftovers] == [True]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "model.safetensors"]  # no partial file under any name a loader reads
    # The next save replaces the checkpoint and leaves the other write's file alone.
    save_weights(new_model, path)
    assert torch.equal(load_weights(path)[0]["weight"], new_model.weight.detach())
    assert temp_files(tmp_path) == leftovers


def _train_until_killed_in_second_checkpoint(config_file: Path, data_root: Path, out: Path,
                                             where: str) -> None:
    """In a forked child: train, and SIGKILL the process during the second checkpoint
    (writes: weights 1, state 1, weights 2, state 2)."""
    from cnnzoo.utils.files import atomic_open

    calls = []
    write = cnnzoo.runs.checkpoint.atomic_write_bytes

    def dying_write(path, data):
        calls.append(path)
        if len(calls) == 3 and where == "in_weights":
            with atomic_open(path) as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        write(path, data)
        if len(calls) == 3 and where == "between_files":
            os.kill(os.getpid(), signal.SIGKILL)  # the new weights are in place, the state not

    cnnzoo.runs.checkpoint.atomic_write_bytes = dying_write
    train(cnnzoo.load_config(config_file), data_root, out=out)


@pytest.mark.parametrize("where", ["in_weights", "between_files"])
def test_a_training_killed_while_saving_resumes_to_the_same_result(
    tmp_path, cli, config_file, data_root, straight, where
):
    out = tmp_path / "run"
    pid = os.fork()  # one thread (see one_thread), so the child may run torch safely
    if pid == 0:
        try:
            _train_until_killed_in_second_checkpoint(config_file, data_root, out, where)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    state = load_state(out / "state.pt")
    assert state["step"] == STEPS_PER_EPOCH  # the first epoch's checkpoint
    weights_sha = load_weights(out / "model.safetensors")[1]["sha256"]
    if where == "between_files":  # the weights are a checkpoint ahead of the state
        assert weights_sha != state["weights_sha256"]
        assert temp_files(out) == []
    else:
        assert weights_sha == state["weights_sha256"]
        assert len(temp_files(out)) == 1
    result = cli("train", "--resume", out, "--data-root", data_root)
    assert result.code == 0, result.err
    assert_same_training(out, straight)
    assert cli("eval", out, "--data-root", data_root).code == 0


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "model.safetensors"
    old_model = torch.nn.Linear(3, 2)
    save_weights(old_model, path)
    old = path.read_bytes()

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(CnnzooError) as full:
            save_weights(torch.nn.Linear(3, 2), path)
    else:
        def half_then_full(handle):
            handle.write(b"x" * 100)
            no_space()

        with pytest.raises(CnnzooError) as full:
            atomic_write_with(path, half_then_full)
    assert str(full.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == old
    assert temp_files(tmp_path) == []


class FullDiskAfter(Callback):
    """From the end of epoch `epoch` on, every fsync fails as on a full disk."""

    def __init__(self, epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.epoch, self.monkeypatch = epoch, monkeypatch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            def no_space(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self.monkeypatch.setattr(os, "fsync", no_space)


def test_a_full_disk_during_training_keeps_the_last_checkpoint_for_resume(
    tmp_path, monkeypatch, config_file, data_root, straight, interrupted
):
    out = tmp_path / "run"
    with pytest.raises(CnnzooError, match="No space left on device") as full:
        train(cnnzoo.load_config(config_file), data_root, out=out,
              callbacks=[FullDiskAfter(1, monkeypatch)])
    assert str(full.value).startswith(f"cannot write {out / 'model.safetensors'}")
    monkeypatch.undo()  # space freed
    assert temp_files(out) == []
    assert load_state(out / "state.pt")["step"] == STEPS_PER_EPOCH
    assert_same_weights(out, interrupted(STEPS_PER_EPOCH))
    train(cnnzoo.load_config(out / "config.yaml"), data_root, resume=out)
    assert_same_training(out, straight)


# ---- 6. divergence


def test_a_diverging_loss_stops_at_the_step_it_happens(tmp_path, cli, config_file, data_root):
    out = tmp_path / "run"
    result = cli("train", "-c", config_file, "--data-root", data_root, "-o", out,
                 "--set", "train.optimizer.lr=1.0e6")
    assert result.code == USER_ERROR
    err = result.err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the learning rate is likely too high (train.optimizer.lr: 1e+06)" in err
    assert f"No checkpoint had been written to {out} yet" in err
    step = int(err.split("(global step ")[1].split(")")[0])
    assert not (out / "model.safetensors").exists() and not (out / "state.pt").exists()
    # Independently: the same run stopped one step earlier had only finite losses and
    # weights, so training stopped at the very step the loss went bad.
    assert step > 1  # lr 1e6 takes a few steps to overflow
    config = cnnzoo.load_config(config_file, ["train.optimizer.lr=1.0e6"])
    with pytest.raises(Interrupted):
        train(config, data_root, out=tmp_path / "before", stop_after_steps=step - 1)
    losses = torch.tensor([float(r["loss"]) for r in step_rows(tmp_path / "before")])
    assert len(losses) == step - 1 and torch.isfinite(losses).all()
    assert all(torch.isfinite(t).all() for t in weights_of(tmp_path / "before").values())


class InfiniteFrom(Callback):
    """From the end of epoch `epoch` on, the network's output is multiplied by inf: the
    loss of the next step is not finite (as after an exploding update)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            model.register_forward_hook(lambda module, args, output: output * float("inf"))


class NanWeightsAt(Callback):
    """At the end of epoch `epoch`, a weight becomes NaN, as after an update that
    overflowed while the loss was still finite."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, ctx, epoch, rows, model) -> None:
        if epoch == self.epoch:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("cause", ["nan_loss", "nan_weights"])
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, config_file, data_root,
                                                   interrupted, cause):
    out = tmp_path / "run"
    good = interrupted(STEPS_PER_EPOCH)  # what the first epoch's checkpoint must hold
    callback = InfiniteFrom(0) if cause == "nan_loss" else NanWeightsAt(1)
    with pytest.raises(Diverged) as diverged:
        train(cnnzoo.load_config(config_file), data_root, out=out, callbacks=[callback])
    message = str(diverged.value)
    if cause == "nan_loss":
        assert "the loss became" in message
        assert f"epoch 2, step 1 (global step {STEPS_PER_EPOCH + 1})" in message
    else:
        assert f"by global step {2 * STEPS_PER_EPOCH}" in message and "layers." in message
    assert f"The last good checkpoint in {out} was kept" in message
    weights = weights_of(out)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert_same_weights(out, good)
    assert load_state(out / "state.pt")["step"] == STEPS_PER_EPOCH


@pytest.fixture
def lagged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Losses read one step late, as on CUDA (where reading at once would stall the
    GPU), here on the CPU."""
    original = StepLosses.__init__

    def init(self, device, on_value, lag=None):
        original(self, device, on_value, lag=1)

    monkeypatch.setattr(StepLosses, "__init__", init)


def test_reading_losses_a_step_late_changes_nothing_but_when(tmp_path, config_file, data_root,
                                                             straight, lagged):
    """Straight and interrupted-and-resumed runs with lagged reading are bitwise the
    unlagged straight run: every loss reaches the log, the checkpoint and the tally."""
    config = cnnzoo.load_config(config_file)
    run = train(config, data_root, out=tmp_path / "lagged")
    assert_same_training(run, straight)
    with pytest.raises(Interrupted):
        train(config, data_root, out=tmp_path / "stopped", stop_after_steps=13)
    assert len(step_rows(tmp_path / "stopped")) == 13
    fit(config, resume=tmp_path / "stopped", data_root=str(data_root), show_progress=False,
        callbacks=[])
    assert_same_training(tmp_path / "stopped", straight)


def test_a_late_read_nan_loss_names_its_own_step_and_keeps_the_checkpoint(
        tmp_path, config_file, data_root, interrupted, lagged):
    out = tmp_path / "run"
    good = interrupted(STEPS_PER_EPOCH)
    with pytest.raises(Diverged) as diverged:
        train(cnnzoo.load_config(config_file), data_root, out=out, callbacks=[InfiniteFrom(0)])
    # Read one step late, but named as the step whose loss it was.
    assert f"epoch 2, step 1 (global step {STEPS_PER_EPOCH + 1})" in str(diverged.value)
    assert_same_weights(out, good)
    assert load_state(out / "state.pt")["step"] == STEPS_PER_EPOCH


def test_step_losses_reads_in_order_and_flushes():
    seen = []
    losses = StepLosses(torch.device("cpu"), lambda value, info: seen.append((value, info)),
                        lag=1)
    losses.add(torch.tensor(1.0), "a")
    assert seen == []  # not read yet: the next step reads it
    losses.add(torch.tensor(2.0), "b")
    assert seen == [(1.0, "a")]
    losses.flush()
    assert seen == [(1.0, "a"), (2.0, "b")]
    immediate = StepLosses(torch.device("cpu"), lambda value, info: seen.append((value, info)))
    immediate.add(torch.tensor(3.0), "c")
    assert seen[-1] == (3.0, "c")


# ---- 7. mismatches


def _conv_weight_name(config_file: Path) -> str:
    model = cnnzoo.build_model(cnnzoo.load_config(config_file))
    return next(k for k, v in model.state_dict().items() if v.dim() == 4)


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_layers_that_differ_from_the_weights_are_listed(cli, interrupted, config_file,
                                                        data_root, command):
    run = interrupted(13)
    text = (run / "config.yaml").read_text()
    assert text.count("filters: 4") == 1
    (run / "config.yaml").write_text(text.replace("filters: 4", "filters: 16"))
    before = snapshot(run)
    args = (("eval", run) if command == "eval" else ("train", "--resume", run))
    result = cli(*args, "--data-root", data_root)
    assert result.code == USER_ERROR, result.err
    weight = _conv_weight_name(config_file)
    bias = weight.replace("weight", "bias")
    assert f"{weight}: the weights have [4, 1, 3, 3], the model [16, 1, 3, 3]" in result.err
    assert f"{bias}: the weights have [4], the model [16]" in result.err
    assert "do not fit the model of the config" in result.err
    assert snapshot(run) == before


FOLDER = """
model:
  layers:
    - input: {width: 16, height: 16, depth: 3}
    - conv: {filters: 4, padding: same, activation: relu}
    - pool: 4
    - fc: 3
data: {dataset: folder, root: ROOT, val_split: 0, workers: 0}
train: {epochs: 2, batch_size: 10, optimizer: {name: adam, lr: 0.01}}
"""


def test_resume_on_a_folder_whose_classes_changed_is_refused(tmp_path, cli):
    root = write_folder(tmp_path / "pets", per_class=10)
    config = write(tmp_path / "pets.yaml", FOLDER.replace("ROOT", str(root)))
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit(cnnzoo.load_config(config), out=out, stop_after_steps=2, show_progress=False,
            callbacks=[])
    before = snapshot(out)
    for split in ("train", "test"):
        (root / split / "fish").rename(root / split / "bird")
    result = cli("train", "--resume", out)
    assert result.code == USER_ERROR
    assert "differ" in result.err and "fish" in result.err and "bird" in result.err
    assert snapshot(out) == before


def _damaged_images(folder: Path) -> dict[str, Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.png"
    noise = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=torch.Generator()
                          .manual_seed(0))
    Image.fromarray(noise.numpy()).save(good)
    files = {
        "truncated_png": good.read_bytes()[: len(good.read_bytes()) // 2],
        "text_named_jpg": b"this is not a picture\n",
        "empty_png": b"",
        "pixel_bomb_png": pixel_bomb_png(30_000, 30_000),
    }
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.{'jpg' if 'jpg' in name else 'png'}"
        path.write_bytes(data)
        paths[name] = path
    return paths


@pytest.mark.parametrize("name", ["truncated_png", "text_named_jpg", "empty_png",
                                  "pixel_bomb_png"])
def test_predict_names_a_damaged_image(tmp_path, cli, straight, name):
    paths = _damaged_images(tmp_path / "images")
    result = cli("predict", straight, tmp_path / "images" / "good.png", paths[name])
    assert result.code == USER_ERROR
    assert result.err.startswith(f"error: cannot read image {paths[name]}")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


@pytest.mark.slow
def test_damaged_dataset_files_are_named(tmp_path):
    from cnnzoo.config.datasets import dataset_info
    from cnnzoo.data.idx import read_idx
    from cnnzoo.data.sources import load_split

    base = write_cifar10(tmp_path / "cifar", per_batch=10, n_test=10)
    batch = base / "data_batch_1"
    good = batch.read_bytes()

    def load() -> None:
        load_split(dataset_info("cifar10"), "train", [(tmp_path / "cifar", "test")],
                   download=False)

    rng = random.Random(0)
    flips = [(i, b) for i in range(64) for b in range(8)]  # the opcodes up front
    flips += [(rng.randrange(len(good)), rng.randrange(8)) for _ in range(200)]
    with memory_guard():
        for index, bit in flips:
            batch.write_bytes(_flip(good, index, bit))
            try:
                load()
            except DataError as exc:
                assert str(batch) in str(exc), exc
        # A memo index of 2**31 would make the unpickler zero a 16 GiB table.
        batch.write_bytes(b"\x80\x02}r\xff\xff\xff\x7f.")
        with pytest.raises(DataError, match="memo index 2,147,483,647"):
            load()
    marker = tmp_path / "MARKER"
    batch.write_bytes(pickle.dumps(RunsCode(os.system, f"touch {marker}")))
    with pytest.raises(DataError, match="refused to load"):
        load()
    assert not marker.exists()

    raw = write_mnist(tmp_path / "mnist", n_train=20, n_test=10, gz=False)
    images = (raw / "train-images-idx3-ubyte").read_bytes()
    damaged = raw / "damaged-idx3-ubyte"
    # Sizes in the header whose product passes 2**63 (2**64 wraps around to 0 in int64).
    for shape in ((2**31, 2**31, 4), (2**32 - 1, 2**32 - 1, 2**32 - 1), (20, 2**31, 2**31)):
        sizes = b"".join(n.to_bytes(4, "big") for n in shape)
        damaged.write_bytes(images[:4] + sizes + images[16:])
        with pytest.raises(DataError, match="is truncated") as refused:
            read_idx(damaged)
        assert str(damaged) in str(refused.value)


def test_a_leftover_temp_file_is_never_read(tmp_path, straight, cli, data_root):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / ".model.safetensors.abc123.tmp").write_bytes(b"half a file")
    (run / ".state.pt.abc123.tmp").write_bytes(b"half a file")
    assert cli("eval", run, "--data-root", data_root, "--json").code == 0
    atomic_write_bytes(run / "notes.txt", b"new")
    assert (run / ".model.safetensors.abc123.tmp").read_bytes() == b"half a file"
