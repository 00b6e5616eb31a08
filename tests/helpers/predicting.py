"""What the predict and serve tests share: image files to classify and a private cache
for the shipped weights they unpack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.datafiles import class_images


def write_pngs(folder: Path, count: int, seed: int = 0, prefix: str = "img") -> list[Path]:
    """`count` 28 x 28 grey PNGs (learnable fake Fashion-MNIST images), sorted by name."""
    folder.mkdir(parents=True, exist_ok=True)
    images = class_images(np.arange(count) % 10, 28, 1, seed=seed)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{prefix}{i:03d}.png")
        Image.fromarray(image[:, :, 0]).save(paths[-1])
    return paths


def tops(items: list[dict]) -> list[list[tuple[str, int, float]]]:
    """The answers of `cnnzoo predict --json` as comparable tuples (class, index, value)."""
    return [[(g["class"], g["index"], g.get("probability", g.get("score"))) for g in item["top"]]
            if "top" in item else [] for item in items]


def assert_same_answers(got: list[dict], want: list[dict], tolerance: float = 1e-6) -> None:
    """The same classes in the same order for every image, values within `tolerance`."""
    assert len(got) == len(want)
    for mine, theirs in zip(tops(got), tops(want), strict=True):
        assert [g[:2] for g in mine] == [g[:2] for g in theirs]
        assert [g[2] for g in mine] == pytest.approx([g[2] for g in theirs], abs=tolerance)
