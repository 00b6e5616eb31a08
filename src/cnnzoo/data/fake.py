"""Fake data for smoke runs: random images shaped like the model's input, random labels.

Generated directly as uint8 tensors, so any depth (8 channels, 1 channel), any size and any
number of classes works; image libraries only know 1, 3 or 4 channels. The same seed gives
the same images on every machine (torch's CPU generator), and the test images differ from
the training images.
"""

from __future__ import annotations

import torch

from cnnzoo.layers.shapes import Volume

SOURCE = "random images (fake)"
TRAIN_SIZE, TEST_SIZE = 1000, 200  # unless data.limit_train / data.limit_test say otherwise
TRAIN_SEED, TEST_SEED = 0, 1


def fake_images(
    size: int, volume: Volume, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` random uint8 images (N, D, H, W) of `volume`, labels in [0, num_classes)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (size, volume.depth, volume.height, volume.width)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, num_classes, (size,), generator=generator)
    return images, labels


def fake_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(num_classes))
