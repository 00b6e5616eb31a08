"""Training, evaluation and prediction end to end on fake files in the real formats,
and once on the real Fashion-MNIST where Debian's package has installed it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.config.datasets import dataset_info
from cnnzoo.data.sources import load_split
from cnnzoo.training.optim import lr_factor
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import FASHION_DIR, run_process, write
from tests.helpers.datafiles import (
    class_images,
    write_cifar10,
    write_folder,
    write_mnist,
    write_svhn,
)

SMALL = """
model:
  layers:
    - conv: {{filters: 8, kernel: 3, padding: same, activation: relu}}
    - pool: 4
    - fc: {classes}
data: {{dataset: {dataset}, val_split: 0.1}}
train:
  epochs: 2
  batch_size: 32
  optimizer: {{name: adam, lr: 0.01}}
"""


def small_config(tmp_path: Path, dataset: str = "fashion_mnist", classes: int = 10,
                 extra: str = "") -> Path:
    return write(tmp_path / "small.yaml", SMALL.format(dataset=dataset, classes=classes) + extra)


@pytest.fixture
def mnist_root(tmp_path):
    write_mnist(tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.slow
def test_train_eval_predict_on_fake_mnist_files(tmp_path, mnist_root, cli):
    config = small_config(tmp_path)
    out = tmp_path / "run"
    result = cli("train", "--config", config, "--data-root", mnist_root, "--out", out)
    assert result.code == 0, result.err
    for name in ("config.yaml", "run.json", "summary.txt", "model.safetensors", "state.pt",
                 "metrics.csv", "steps.csv", "results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert {"test_accuracy", "test_loss", "train_seconds", "params", "macs", "device"} <= set(
        results)
    assert results["test_samples"] == 200
    assert results["test_accuracy"] > 0.9  # the fake classes are easy to tell apart
    assert results["params"] == cnnzoo.plan_experiment(cnnzoo.load_config(config)).total_params
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["epoch"], r["split"]) for r in rows] == [
        ("1", "train"), ("1", "val"), ("2", "train"), ("2", "val"), ("2", "test")]
    assert float(rows[-1]["accuracy"]) == pytest.approx(results["test_accuracy"], abs=1e-6)
    resolved = cnnzoo.load_config(out / "config.yaml")
    assert dict(resolved.versions)["torch"] == str(torch.__version__)

    evaluated = cli("eval", out, "--json", "--data-root", mnist_root)
    assert evaluated.code == 0, evaluated.err
    data = json.loads(evaluated.out)
    assert data["accuracy"] == pytest.approx(results["test_accuracy"])
    assert data["samples"] == 200
    assert np.array(data["confusion"]).sum() == 200
    assert set(data["per_class"]) == set(dataset_info("fashion_mnist").classes)
    table = cli("eval", out, "--split", "val", "--data-root", mnist_root)
    assert table.code == 0 and "Ankle boot" in table.out and "confusion matrix" in table.out

    from PIL import Image

    image = class_images(np.array([7]), 28, 1, seed=5)[0, :, :, 0]
    Image.fromarray(image).save(tmp_path / "seven.png")
    Image.fromarray(image).convert("RGB").resize((56, 56)).save(tmp_path / "seven-big.jpg")
    predicted = cli("predict", out, tmp_path / "seven.png", tmp_path / "seven-big.jpg", "--json")
    assert predicted.code == 0, predicted.err
    top = json.loads(predicted.out)
    assert top[0]["top"][0]["class"] == "Sneaker"  # class 7
    assert sum(g["probability"] for g in top[0]["top"]) <= 1.0 + 1e-6
    assert top[1]["top"][0]["index"] == 7


@pytest.mark.slow
def test_resume_continues_bitwise_identically(tmp_path, mnist_root):
    config = cnnzoo.load_config(small_config(tmp_path, extra=""), [
        "data.augment.crop=2", "data.augment.flip=true", "data.augment.erase=0.5",
        "model.layers.1=dropout", "train.scheduler=cosine"])
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    fit(config, out=straight, data_root=str(mnist_root), show_progress=False)
    with pytest.raises(Interrupted) as stop:
        fit(config, out=parted, data_root=str(mnist_root), show_progress=False,
            stop_after_steps=20)  # mid-epoch 2 (16 steps per epoch)
    assert stop.value.exit_code == 130
    fit(config, resume=parted, data_root=str(mnist_root), show_progress=False)
    a = cnnzoo.runs.checkpoint.load_weights(straight / "model.safetensors")[0]
    b = cnnzoo.runs.checkpoint.load_weights(parted / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / "steps.csv").read_text() == (parted / "steps.csv").read_text()


def test_fake_cifar10_files_load_with_class_names(tmp_path):
    write_cifar10(tmp_path)
    raw = load_split(dataset_info("cifar10"), "train", [(tmp_path, "test")], download=False)
    assert raw.images.shape == (500, 3, 32, 32) and raw.images.dtype == torch.uint8
    assert raw.classes[0] == "airplane" and raw.labels[:3].tolist() == [0, 1, 2]
    test = load_split(dataset_info("cifar10"), "test", [(tmp_path, "test")], download=False)
    assert len(test.labels) == 100


@pytest.mark.slow
def test_train_on_fake_cifar10(tmp_path, cli):
    write_cifar10(tmp_path / "data")
    config = small_config(tmp_path, dataset="cifar10", extra="  tta: flip\n")
    result = cli("train", "-c", config, "--data-root", tmp_path / "data", "-o", tmp_path / "r",
                 "--set", "data.augment.flip=true")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "r" / "results.json").read_text())["test_samples"] == 100


def test_fake_svhn_files_load(tmp_path):
    pytest.importorskip("scipy")
    write_svhn(tmp_path)
    raw = load_split(dataset_info("svhn"), "train", [(tmp_path, "test")], download=False)
    assert raw.images.shape == (100, 3, 32, 32)
    assert raw.labels[:3].tolist() == [0, 1, 2]  # 10 is stored for the digit 0


@pytest.mark.parametrize(("dataset", "folder", "prefix", "classes"), [
    ("mnist", "MNIST", "", 10), ("kmnist", "KMNIST", "", 10),
    ("emnist", "EMNIST", "emnist-balanced-", 47)])
def test_mnist_family_loaders(tmp_path, dataset, folder, prefix, classes):
    write_mnist(tmp_path, folder, n_train=94, n_test=47, classes=classes, gz=False, prefix=prefix)
    raw = load_split(dataset_info(dataset), "test", [(tmp_path, "test")], download=False)
    assert raw.images.shape == (47, 1, 28, 28) and len(raw.classes) == classes
    if dataset == "emnist":  # stored transposed
        stored = cnnzoo.data.idx.read_idx(
            tmp_path / folder / "raw" / "emnist-balanced-test-images-idx3-ubyte")
        assert torch.equal(raw.images[0, 0], torch.from_numpy(stored[0].T.copy()))


@pytest.mark.slow
def test_folder_dataset_end_to_end(tmp_path, cli):
    root = write_folder(tmp_path / "pets")
    config = write(tmp_path / "pets.yaml", """
model:
  layers:
    - input: {width: 16, height: 16, depth: 3}
    - conv: {filters: 8, padding: same, activation: relu}
    - pool: 4
    - fc: 3
data: {dataset: folder, root: ROOT, val_split: 0, workers: 0}
train: {epochs: 3, batch_size: 10, optimizer: {name: adam, lr: 0.01}}
""".replace("ROOT", str(root)))
    result = cli("train", "-c", config, "-o", tmp_path / "run")
    assert result.code == 0, result.err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["classes"] == ["cat", "dog", "fish"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_samples"] == 60 and results["test_accuracy"] > 0.9
    # The same run evaluated on a folder whose classes changed is refused.
    (root / "test" / "fish").rename(root / "test" / "bird")
    (root / "train" / "fish").rename(root / "train" / "bird")
    refused = cli("eval", tmp_path / "run")
    assert refused.code == 2
    assert "differ" in refused.err and "fish" in refused.err


def test_folder_with_a_damaged_image_is_named(tmp_path, cli):
    root = write_folder(tmp_path / "pets", per_class=4)
    bad = root / "train" / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:40])
    config = write(tmp_path / "pets.yaml", f"""
model: {{layers: [input: {{width: 16, height: 16, depth: 3}}, fc: 3]}}
data: {{dataset: folder, root: {root}, workers: 0, val_split: 0}}
""")
    result = cli("train", "-c", config, "-o", tmp_path / "run")
    assert result.code == 2
    assert str(bad) in result.err
    assert not (tmp_path / "run").exists()


def test_folder_class_count_must_match_the_last_layer(tmp_path, cli):
    root = write_folder(tmp_path / "pets", per_class=4)
    config = write(tmp_path / "pets.yaml", f"""
model: {{layers: [input: {{width: 16, height: 16, depth: 3}}, fc: 10]}}
data: {{dataset: folder, root: {root}, workers: 0}}
""")
    result = cli("train", "-c", config, "-o", tmp_path / "run")
    assert result.code == 2
    assert "model.layers[1] (fc)" in result.err and "10 outputs" in result.err
    assert "3 classes" in result.err and not (tmp_path / "run").exists()


def test_missing_dataset_offline_lists_the_ways_to_get_it(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNZOO_DATA", raising=False)
    config = small_config(tmp_path, dataset="kmnist")
    result = cli("train", "-c", config, "-o", tmp_path / "run", "--set", "data.download=false")
    assert result.code == 2
    assert "dataset kmnist not found" in result.err
    assert "--data-root" in result.err and "$CNNZOO_DATA" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "run").exists()


def test_failed_download_is_one_clear_error(tmp_path, cli, monkeypatch):
    import urllib.error

    import torchvision

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "KMNIST", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = cli("train", "-c", small_config(tmp_path, dataset="kmnist"), "-o", tmp_path / "r")
    assert result.code == 2
    assert "the download failed (URLError" in result.err
    assert "Traceback" not in result.err
    leftovers = list((tmp_path / "cache").rglob("*"))
    assert all(p.is_dir() for p in leftovers), leftovers  # no partial download left


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_damaged_idx_file_is_named(tmp_path, cli, damage):
    raw = write_mnist(tmp_path / "data", gz=False)
    path = raw / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:1000] if damage == "truncate" else b"\x12\x34" + data[2:])
    result = cli("train", "-c", small_config(tmp_path), "--data-root", tmp_path / "data",
                 "-o", tmp_path / "r")
    assert result.code == 2
    assert str(path) in result.err
    assert ("truncated" if damage == "truncate" else "not an IDX file") in result.err


def test_input_not_matching_the_dataset_suggests_resize(tmp_path, cli, mnist_root):
    config = write(tmp_path / "c.yaml", "model: {layers: [input: {width: 32, height: 32, "
                   "depth: 3}, fc: 10]}\ndata: {dataset: fashion_mnist}\n")
    result = cli("train", "-c", config, "--data-root", mnist_root, "-o", tmp_path / "r")
    assert result.code == 2 and "data.resize" in result.err and "data.channels: 3" in result.err
    fixed = cli("train", "-c", config, "--data-root", mnist_root, "-o", tmp_path / "r",
                "--set", "data.pad=2", "--set", "data.channels=3", "--set", "train.epochs=1")
    assert fixed.code == 0, fixed.err


@pytest.mark.parametrize(("override", "message"), [
    ("train.epoch=3", "'epoch' is not a parameter of train; did you mean 'epochs'?"),
    ("train.epochs=three", "epochs must be an integer"),
    ("train.optimizer.lr=-1", "lr must be >= 0.0"),
    ("train", "--set takes key=value"),
])
def test_bad_set_is_a_clear_error(tmp_path, cli, override, message):
    result = cli("train", "-c", small_config(tmp_path), "--set", override, "-o", tmp_path / "r")
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "r").exists()


def test_out_pointing_at_a_file_is_refused(tmp_path, cli, mnist_root):
    target = write(tmp_path / "taken.txt", "mine")
    result = cli("train", "-c", small_config(tmp_path), "--data-root", mnist_root, "-o", target)
    assert result.code == 2 and "is a file" in result.err
    assert target.read_text() == "mine"


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused(tmp_path, cli, mnist_root):
    config = small_config(tmp_path)
    out = tmp_path / "run"
    assert cli("train", "-c", config, "--data-root", mnist_root, "-o", out,
               "--set", "train.epochs=1").code == 0
    (out / "results.json").unlink()  # a finished run is not resumed at all; this one stopped
    for change, key in (("train.seed=7", "train.seed"), ("train.batch_size=16",
                                                          "train.batch_size"),
                        ("model.layers.0.conv.filters=4", "model.layers")):
        result = cli("train", "--resume", out, "--set", change, "--data-root", mnist_root)
        assert result.code == 2, change
        assert key in result.err


@pytest.mark.slow
def test_real_subprocess_exit_codes(tmp_path, mnist_root):
    ok = run_process("train", "-c", small_config(tmp_path), "--data-root", mnist_root,
                     "-o", tmp_path / "run", "--set", "train.epochs=1")
    assert ok.code == 0, ok.err
    assert "epoch 1/1" in ok.out and "test accuracy" in ok.out
    bad = run_process("eval", tmp_path / "nowhere")
    assert bad.code == 2 and "Traceback" not in bad.err and "no run directory" in bad.err


def _reference_onecycle(total: int, lr: float, pct: float) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                pct_start=pct, cycle_momentum=False)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_onecycle_schedule_matches_torch():
    from cnnzoo.config.experiment import SchedulerConfig

    cfg = SchedulerConfig(name="onecycle", pct_start=0.3)
    ours = [0.2 * lr_factor(s, 100, 10, 0.2, cfg) for s in range(100)]
    theirs = _reference_onecycle(100, 0.2, 0.3)
    # torch counts the peak at step pct*total - 1; agree to within one step's change.
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 0.2 * 0.06


def test_cosine_warmup_and_step_schedules():
    from cnnzoo.config.experiment import SchedulerConfig

    cos = SchedulerConfig(name="cosine", warmup_epochs=1.0, min_lr=0.01)
    assert lr_factor(0, 100, 10, 0.1, cos) == pytest.approx(0.1)  # 1/10 of warm-up
    assert lr_factor(9, 100, 10, 0.1, cos) == pytest.approx(1.0)
    middle = 10 + 45
    assert lr_factor(middle, 100, 10, 0.1, cos) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)
    assert lr_factor(100, 100, 10, 0.1, cos) == pytest.approx(0.1)  # min_lr / lr
    step = SchedulerConfig(name="step", step_epochs=3, gamma=0.5)
    assert [lr_factor(s * 10, 100, 10, 1.0, step) for s in (0, 2, 3, 6, 9)] == [
        1, 1, 0.5, 0.25, 0.125]
    assert math.isclose(lr_factor(5, 100, 10, 1.0, SchedulerConfig()), 1.0)


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_one_epoch(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    result = cli("train", "-c", "lenet5", "-o", tmp_path / "run", "--set", "train.epochs=1",
                 "--set", "data.download=false")
    assert result.code == 0, result.err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["source"] == str(FASHION_DIR)  # read in place, from the Debian package
    assert results["test_samples"] == 10_000
    assert results["test_accuracy"] >= 0.85
