"""Two small configs trained on fake Fashion-MNIST files (the `trained` fixture in
tests/conftest.py), an image to feed them, and a check that a PNG is complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import cnnzoo
from cnnzoo.training.trainer import fit
from tests.helpers.datafiles import class_images, write_mnist

SMALL = """
name: small
model:
  layers:
    - conv: {filters: 8, kernel: 3, padding: same, activation: relu}
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}}
"""
DENSE = """
name: dense
model:
  layers:
    - fc: {units: 16, activation: relu}
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}}
"""


def train_small_and_dense(base: Path) -> dict[str, Path]:
    """Two finished runs on fake Fashion-MNIST files under `base`, with the default
    callbacks: {"base", "data", "small", "dense"} -> paths."""
    write_mnist(base / "data")
    paths = {"base": base, "data": base / "data"}
    for text in (SMALL, DENSE):
        config = cnnzoo.parse_config(text)
        out = base / "runs" / config.name
        fit(config, out=out, data_root=str(base / "data"), show_progress=False)
        paths[config.name] = out
    return paths


def image_file(tmp_path: Path, label: int = 7) -> Path:
    path = tmp_path / f"item{label}.png"
    Image.fromarray(class_images(np.array([label]), 28, 1, seed=5)[0, :, :, 0]).save(path)
    return path


def assert_png(path: Path, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """A complete PNG with something drawn on it."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes every row: a truncated file fails here
        assert img.mode == "RGBA"
        if size is not None:
            assert img.size == size
        assert np.asarray(img.convert("L")).std() > 1.0
        return img.size
