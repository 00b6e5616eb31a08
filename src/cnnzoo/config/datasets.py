"""What cnnzoo knows about each dataset, as a table (no torch, no files).

The planner uses it for the input volume and the number of classes; the loaders
use it for file names, mean/std and where distribution packages install the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnzoo.layers.shapes import Volume

_DIGITS = tuple(str(i) for i in range(10))


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    name: str  # the name in `data.dataset`
    torchvision_class: str | None  # e.g. "FashionMNIST"; None for folder
    volume: Volume | None  # W x H x D of one image; None when it depends on the files
    num_classes: int | None
    classes: tuple[str, ...] | None  # None when read from the files (cifar100)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str  # how the files are stored: "idx", "cifar", "svhn", "folder", "fake"
    idx_files: dict[str, tuple[str, str]] | None = None  # split -> (images, labels) file stems
    system_dirs: tuple[str, ...] = ()  # where distribution packages install it
    note: str = ""
    transposed: bool = False  # images stored with rows and columns swapped (EMNIST)
    # extra arguments of the torchvision class when downloading (EMNIST's split)
    torchvision_args: dict[str, Any] = field(default_factory=dict)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="mnist", torchvision_class="MNIST", volume=Volume(28, 28, 1), num_classes=10,
            classes=_DIGITS, mean=(0.1307,), std=(0.3081,), layout="idx",
            idx_files=_MNIST_FILES, system_dirs=("/usr/share/datasets/mnist",),
        ),
        DatasetInfo(
            name="fashion_mnist", torchvision_class="FashionMNIST", volume=Volume(28, 28, 1),
            num_classes=10,
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            mean=(0.2860,), std=(0.3530,), layout="idx", idx_files=_MNIST_FILES,
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            note="Debian: apt-get install dataset-fashion-mnist",
        ),
        DatasetInfo(
            name="kmnist", torchvision_class="KMNIST", volume=Volume(28, 28, 1), num_classes=10,
            classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            mean=(0.1918,), std=(0.3483,), layout="idx", idx_files=_MNIST_FILES,
            system_dirs=("/usr/share/datasets/kmnist",),
        ),
        DatasetInfo(
            name="emnist", torchvision_class="EMNIST", volume=Volume(28, 28, 1), num_classes=47,
            classes=(*_DIGITS, *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"abdefghnqrt"),
            mean=(0.1751,), std=(0.3332,), layout="idx",
            idx_files={
                "train": ("emnist-balanced-train-images-idx3-ubyte",
                          "emnist-balanced-train-labels-idx1-ubyte"),
                "test": ("emnist-balanced-test-images-idx3-ubyte",
                         "emnist-balanced-test-labels-idx1-ubyte"),
            },
            system_dirs=("/usr/share/datasets/emnist",),
            note="the balanced split: 47 classes",
            transposed=True,
            torchvision_args={"split": "balanced"},
        ),
        DatasetInfo(
            name="cifar10", torchvision_class="CIFAR10", volume=Volume(32, 32, 3), num_classes=10,
            classes=("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"),
            mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), layout="cifar",
            system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
        ),
        DatasetInfo(
            name="cifar100", torchvision_class="CIFAR100", volume=Volume(32, 32, 3),
            num_classes=100, classes=None,
            mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), layout="cifar",
            system_dirs=("/usr/share/datasets/cifar100", "/usr/share/datasets/cifar-100"),
        ),
        DatasetInfo(
            name="svhn", torchvision_class="SVHN", volume=Volume(32, 32, 3), num_classes=10,
            classes=_DIGITS, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
            layout="svhn", system_dirs=("/usr/share/datasets/svhn",),
        ),
        DatasetInfo(
            name="folder", torchvision_class=None, volume=None, num_classes=None, classes=None,
            mean=(0.5,), std=(0.5,), layout="folder",
            note="your own images: root/train/<class>/*.png (and root/test/<class>/...)",
        ),
        DatasetInfo(
            name="fake", torchvision_class="FakeData", volume=Volume(28, 28, 1),
            num_classes=None, classes=None, mean=(0.5,), std=(0.25,), layout="fake",
            note="random images for smoke runs; shaped like the model's input and output",
        ),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS[name]


def dataset_volume(dataset: str, resize: tuple[int, int] | None, pad: int,
                   channels: int | None) -> Volume | None:
    """The volume the model sees after the data options `resize`, `pad` and `channels`;
    None if unknown."""
    base = DATASETS[dataset].volume
    if resize is not None:
        height, width = resize
    elif base is not None:
        height, width = base.height, base.width
    else:
        return None
    height, width = height + 2 * pad, width + 2 * pad
    if channels is not None:
        depth = channels
    elif base is not None:
        depth = base.depth
    else:
        depth = 3
    return Volume(width, height, depth)
