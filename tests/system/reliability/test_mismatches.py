"""7. Mismatches: weights, classes, images and dataset files that do not fit are named,
and a leftover temp file is never read."""

from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.errors import DataError
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from cnnzoo.utils.files import atomic_write_bytes
from tests.helpers.common import write
from tests.helpers.datafiles import pixel_bomb_png, write_cifar10, write_folder, write_mnist
from tests.system.reliability.common import (
    USER_ERROR,
    RunsCode,
    flip_bit,
    memory_guard,
    snapshot,
)


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
            batch.write_bytes(flip_bit(good, index, bit))
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
