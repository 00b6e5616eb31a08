"""Fake dataset files in the real formats (IDX, CIFAR pickles, SVHN .mat, image
folders), written the way torchvision's own tests do, so the real loading code runs
offline. Images are learnable: class k has a bright block at a place of its own."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cnnzoo.data.idx import write_idx


def class_images(labels: np.ndarray, size: int, channels: int, seed: int,
                 num_classes: int = 10) -> np.ndarray:
    """uint8 images (N, size, size, channels): noise plus a bright block whose place
    encodes the label, so a small network can learn them."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size, channels), dtype=np.uint8)
    cells = int(np.ceil(np.sqrt(num_classes)))
    block = size // cells
    for i, label in enumerate(labels):
        r, c = divmod(int(label), cells)
        images[i, r * block:(r + 1) * block, c * block:(c + 1) * block] = 230
    return images


def write_mnist(root: Path, folder: str = "FashionMNIST", n_train: int = 600, n_test: int = 200,
                classes: int = 10, gz: bool = True, prefix: str = "") -> Path:
    """MNIST-format IDX files in root/<folder>/raw, as torchvision downloads them."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        labels = np.arange(n) % classes
        images = class_images(labels, 28, 1, seed)[..., 0]
        stem = f"{prefix}{'test' if prefix and split == 't10k' else split}"
        write_idx(raw / f"{stem}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{stem}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))
    return raw


def write_cifar10(root: Path, per_batch: int = 100, n_test: int = 100) -> Path:
    """The python-pickle CIFAR-10 layout: cifar-10-batches-py/data_batch_1..5, test_batch."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        labels = np.arange(n) % 10
        images = class_images(labels, 32, 3, i).transpose(0, 3, 1, 2).reshape(n, 3072)
        with open(base / name, "wb") as handle:
            pickle.dump({"data": images, "labels": labels.tolist(),
                         "batch_label": f"batch {i}"}, handle, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    with open(base / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names, "num_vis": 3072}, handle, protocol=2)
    return base


def write_svhn(root: Path, n: int = 100) -> None:
    from scipy import io as sio

    root.mkdir(parents=True, exist_ok=True)
    for split, seed in (("train", 0), ("test", 1)):
        labels = np.arange(n) % 10
        images = class_images(labels, 32, 3, seed).transpose(1, 2, 3, 0)  # (H, W, C, N)
        stored = np.where(labels == 0, 10, labels).reshape(-1, 1)
        sio.savemat(root / f"{split}_32x32.mat", {"X": images, "y": stored})


def write_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fish"), per_class: int = 20,
                 size: int = 16, with_test: bool = True) -> Path:
    """root/train/<class>/*.png (and root/test/...), class-dependent images."""
    from PIL import Image

    splits = ("train", "test") if with_test else ("train",)
    for s, split in enumerate(splits):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = class_images(np.full(per_class, label), size, 3, 10 * s + label,
                                  len(classes))
            for i, img in enumerate(images):
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def pixel_bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width` x `height` grey pixels, with no pixel data:
    a few dozen bytes that would decode to gigabytes (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
