"""What cnnzoo knows about each dataset, as a table (no torch, no files).

The planner uses it for the input volume and the number of classes; the loaders
use it for file names, mean/std and where distribution packages install the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnzoo.shapes import Volume

_DIGITS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
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


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "mnist", "MNIST", Volume(28, 28, 1), 10, _DIGITS, (0.1307,), (0.3081,), "idx",
            _MNIST_FILES, ("/usr/share/datasets/mnist",),
        ),
        DatasetInfo(
            "fashion_mnist", "FashionMNIST", Volume(28, 28, 1), 10,
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            (0.2860,), (0.3530,), "idx", _MNIST_FILES,
            ("/usr/share/datasets/fashion-mnist",),
            note="Debian: apt-get install dataset-fashion-mnist",
        ),
        DatasetInfo(
            "kmnist", "KMNIST", Volume(28, 28, 1), 10,
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            (0.1918,), (0.3483,), "idx", _MNIST_FILES, ("/usr/share/datasets/kmnist",),
        ),
        DatasetInfo(
            "emnist", "EMNIST", Volume(28, 28, 1), 47,
            (*_DIGITS, *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"abdefghnqrt"),
            (0.1751,), (0.3332,), "idx",
            {
                "train": ("emnist-balanced-train-images-idx3-ubyte",
                          "emnist-balanced-train-labels-idx1-ubyte"),
                "test": ("emnist-balanced-test-images-idx3-ubyte",
                         "emnist-balanced-test-labels-idx1-ubyte"),
            },
            ("/usr/share/datasets/emnist",),
            note="the balanced split: 47 classes",
        ),
        DatasetInfo(
            "cifar10", "CIFAR10", Volume(32, 32, 3), 10,
            ("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar",
            system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
        ),
        DatasetInfo(
            "cifar100", "CIFAR100", Volume(32, 32, 3), 100, None,
            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar",
            system_dirs=("/usr/share/datasets/cifar100", "/usr/share/datasets/cifar-100"),
        ),
        DatasetInfo(
            "svhn", "SVHN", Volume(32, 32, 3), 10, _DIGITS,
            (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "svhn",
            system_dirs=("/usr/share/datasets/svhn",),
        ),
        DatasetInfo(
            "folder", None, None, None, None, (0.5,), (0.5,), "folder",
            note="your own images: root/train/<class>/*.png (and root/test/<class>/...)",
        ),
        DatasetInfo(
            "fake", "FakeData", Volume(28, 28, 1), None, None, (0.5,), (0.25,), "fake",
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
