"""From a dataset's stored splits to batches on the training device.

Datasets that fit in memory are held once as a uint8 tensor on the device; a
batch is an index slice, and normalisation and augmentation run per batch on
tensors, seeded by (seed, epoch, step) so a resumed run sees the same batches.
Only `folder` datasets decode images per sample, in DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from cnnzoo.config.datasets import DatasetInfo, dataset_info
from cnnzoo.config.experiment import DataConfig
from cnnzoo.data import fake
from cnnzoo.data.folders import scan_class_folders
from cnnzoo.data.images import read_image
from cnnzoo.data.sources import RawSplit, load_split, search_dirs
from cnnzoo.data.subsets import LIMIT_TEST_SEED, stratified_pick, stratified_split
from cnnzoo.errors import DataError
from cnnzoo.layers.shapes import Volume

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm"}


def step_seed(seed: int, epoch: int, step: int, salt: int = 0) -> int:
    """A seed for one step's randomness that depends only on where training is."""
    return hash((seed, epoch, step, salt)) & 0x7FFF_FFFF_FFFF_FFFF


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: the same in every process and on resume."""
    generator = torch.Generator().manual_seed(step_seed(seed, epoch, -1))
    return torch.randperm(n, generator=generator)


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Training steps per epoch: the last incomplete batch is dropped (unless it is
    the only one), so every step sees a full batch for batchnorm and the lr schedule."""
    return max(1, samples // batch_size)


class Batches(Protocol):
    """What training and evaluation ask of a split, whether its images are tensors in
    memory (`Split`) or files decoded as they are read (`FolderSplit`)."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device) -> Batches:
        """The split with its images on `device`, where they can be kept there."""
        ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, start_step: int = 0,
                      rank: int = 0, world: int = 1
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch `epoch`'s shuffled batches from `start_step`; this process's share."""
        ...

    def eval_batches(self, batch_size: int, rank: int = 0, world: int = 1
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in order; this process's share."""
        ...


@dataclass
class Split:
    """Images (uint8, N x C x H x W) and labels held in memory, on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(len(self), batch_size)

    def train_batches(
        self,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of epoch `epoch`, from `start_step` on; each process of a
        `world` takes its share of every global batch."""
        order = epoch_order(len(self), seed, epoch).to(self.labels.device)
        steps = self.steps_per_epoch(batch_size)
        size = min(batch_size, len(self))
        for step in range(start_step, steps):
            index = order[step * size : (step + 1) * size][rank::world]
            yield self.images[index], self.labels[index]

    def eval_batches(
        self, batch_size: int, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in order (a process takes every `world`-th batch)."""
        for i, start in enumerate(range(0, len(self), batch_size)):
            if i % world == rank:
                end = start + batch_size
                yield self.images[start:end], self.labels[start:end]


@dataclass
class Dataset:
    """A dataset ready for training: splits, class names and normalisation."""

    name: str
    train: Batches
    val: Batches | None
    test: Batches
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    volume: Volume
    source: str


def load_dataset(
    data: DataConfig,
    volume: Volume,
    num_outputs: int,
    *,
    seed: int,
    data_root: str | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> Dataset:
    """Load, preprocess (resize, pad, channels) and split a dataset for a model whose
    input is `volume` and which has `num_outputs` outputs."""
    info = dataset_info(data.dataset)
    if info.layout == "folder":
        return _load_folder(data, volume, seed, splits)
    if info.layout == "fake":
        train = Split(*fake.fake_images(data.limit_train or fake.TRAIN_SIZE, volume,
                                        num_outputs, fake.TRAIN_SEED))
        test = Split(*fake.fake_images(data.limit_test or fake.TEST_SIZE, volume, num_outputs,
                                       fake.TEST_SEED))
        classes, source = fake.fake_class_names(num_outputs), fake.SOURCE
    else:
        dirs = search_dirs(data.root, data_root)
        need_train = "train" in splits or "val" in splits
        train_raw = load_split(info, "train", dirs, data.download) if need_train else None
        test_raw = load_split(info, "test", dirs, data.download) if "test" in splits else None
        some = train_raw or test_raw
        classes, source = some.classes, some.source
        train = _prepare(train_raw, data, volume, data.limit_train, seed) if train_raw else None
        test = (_prepare(test_raw, data, volume, data.limit_test, LIMIT_TEST_SEED)
                if test_raw else None)
    train, val = _split_val(train, data.val_split, seed) if train is not None else (None, None)
    mean, std = _normalisation(data, info, volume)
    return Dataset(info.name, train, val, test, tuple(classes), mean, std, volume, source)


def _prepare(raw: RawSplit, data: DataConfig, volume: Volume, limit: int | None,
             seed: int) -> Split:
    images, labels = raw.images, raw.labels
    if limit is not None:  # a seeded subset in the classes' proportions
        keep = torch.tensor(stratified_pick(labels.numpy(), limit, seed), dtype=torch.long)
        images, labels = images[keep], labels[keep]
    return Split(convert_images(images, data, volume), labels)


def convert_images(images: torch.Tensor, data: DataConfig, volume: Volume) -> torch.Tensor:
    """Resize, pad and change channels of uint8 images so they are `volume`."""
    channels = images.shape[1]
    if data.channels is not None and data.channels != channels:
        if data.channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()
        else:
            # ITU-R 601-2 luma, as PIL's convert("L").
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if data.resize is not None and tuple(images.shape[-2:]) != tuple(data.resize):
        chunks = []
        for chunk in images.split(4096):
            resized = F.interpolate(chunk.float(), size=data.resize, mode="bilinear",
                                    antialias=True, align_corners=False)
            chunks.append(resized.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(chunks)
    if data.pad:
        images = F.pad(images, (data.pad,) * 4)
    if tuple(images.shape[1:]) != (volume.depth, volume.height, volume.width):
        c, h, w = images.shape[1:]
        raise DataError(
            f"dataset {data.dataset} gives {w}x{h}x{c} images but the model's input is "
            f"{volume}; set data.resize, data.pad or data.channels"
        )
    return images


def _val_indices(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices, each sorted: `fraction` of the training images drawn by
    `seed` for validation, in the classes' proportions."""
    samples = len(labels)
    n_val = round(samples * fraction)
    if n_val < 1 or n_val >= samples:
        raise DataError(
            f"val_split {fraction} of {samples} training images leaves "
            f"{samples - n_val} to train on and {n_val} to validate"
        )
    val_index, train_index = stratified_split(labels, n_val, seed)
    return train_index, val_index


def _split_val(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    if fraction <= 0:
        return train, None
    train_list, val_list = _val_indices(train.labels.tolist(), fraction, seed)
    train_index, val_index = torch.tensor(train_list), torch.tensor(val_list)
    return (
        Split(train.images[train_index], train.labels[train_index]),
        Split(train.images[val_index], train.labels[val_index]),
    )


def _normalisation(
    data: DataConfig, info: DatasetInfo, volume: Volume
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = data.mean if data.mean is not None else info.mean
    std = data.std if data.std is not None else info.std
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, volume.depth):
            raise DataError(
                f"data.{name} has {len(values)} values but the images have {volume.depth} "
                "channels"
            )
    if len(mean) != volume.depth:
        mean = (sum(mean) / len(mean),) * volume.depth
    if len(std) != volume.depth:
        std = (sum(std) / len(std),) * volume.depth
    return tuple(mean), tuple(std)


class FolderSplit:
    """Images in class folders, decoded per sample in DataLoader workers."""

    def __init__(self, samples: list[tuple[Path, int]], volume: Volume, workers: int) -> None:
        self.samples = samples
        self.volume = volume
        self.workers = workers

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, index: list[int]) -> FolderSplit:
        return FolderSplit([self.samples[i] for i in index], self.volume, self.workers)

    def to(self, device: torch.device) -> FolderSplit:
        """The files stay where they are; each batch is decoded, then moved."""
        return self

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(len(self), batch_size)

    def _loader(self, order: list[int], batch_size: int) -> torch.utils.data.DataLoader:
        dataset = _ImageFiles([self.samples[i] for i in order], self.volume)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=self.workers,
            collate_fn=_collate, persistent_workers=False,
        )

    def train_batches(
        self, batch_size: int, *, seed: int, epoch: int, start_step: int = 0, rank: int = 0,
        world: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The same global order as the in-memory path; each process decodes only its
        # share, which is what DistributedSampler with set_epoch(epoch) does.
        order = epoch_order(len(self), seed, epoch).tolist()
        size = min(batch_size, len(self))
        steps = self.steps_per_epoch(batch_size)
        mine = [i for s in range(start_step, steps) for i in order[s * size:(s + 1) * size][
            rank::world]]
        yield from self._loader(mine, max(1, size // world))

    def eval_batches(
        self, batch_size: int, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = [i for i in range(len(self)) if (i // batch_size) % world == rank]
        yield from self._loader(order, batch_size)


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, samples: list[tuple[Path, int]], volume: Volume) -> None:
        self.samples = samples
        self.volume = volume

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        path, label = self.samples[i]
        try:
            return read_image(path, self.volume), label, None
        except DataError as exc:
            # Reported by the main process, not as a worker traceback.
            return None, label, str(exc)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    for _, _, error in items:
        if error is not None:
            raise DataError(error)
    return torch.stack([i[0] for i in items]), torch.tensor([i[1] for i in items])


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    return scan_class_folders(root, classes, IMAGE_SUFFIXES)


def check_images(samples: list[tuple[Path, int]]) -> None:
    """Open every image before training, so a damaged file is named up front rather
    than stopping a run half-way."""
    from PIL import Image

    for path, _ in samples:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as exc:  # PIL raises many types for damaged files
            raise DataError(f"cannot read image {path}: {exc}") from None


def _load_folder(data: DataConfig, volume: Volume, seed: int, splits: tuple[str, ...]) -> Dataset:
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a directory of class folders")
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = _class_folders(train_root)
    if train_root == root:
        classes = [c for c in classes if c not in ("test", "val")]
    if len(classes) < 2:
        raise DataError(
            f"{train_root} has {len(classes)} class folder(s); a folder dataset needs one "
            "sub-folder per class (root/train/<class>/*.png)"
        )
    samples = _scan(train_root, classes)
    if not samples:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {train_root}")
    if (root / "test").is_dir():
        test_classes = _class_folders(root / "test")
        if set(test_classes) - set(classes):
            raise DataError(
                f"{root / 'test'} has classes that train does not: "
                f"{', '.join(sorted(set(test_classes) - set(classes)))}"
            )
        test_samples = _scan(root / "test", classes)
        train_samples = samples
    else:
        n_test = round(len(samples) * data.test_split)
        test_index, train_index = stratified_split([s[1] for s in samples], n_test, seed + 1)
        test_samples = [samples[i] for i in test_index]
        train_samples = [samples[i] for i in train_index]
    if data.limit_train:
        train_samples = [train_samples[i] for i in stratified_pick(
            [s[1] for s in train_samples], data.limit_train, seed)]
    if data.limit_test:
        test_samples = [test_samples[i] for i in stratified_pick(
            [s[1] for s in test_samples], data.limit_test, LIMIT_TEST_SEED)]
    check_images(train_samples + test_samples)
    train = FolderSplit(train_samples, volume, data.workers)
    val = None
    if data.val_split > 0:
        train_index, val_index = _val_indices([s[1] for s in train.samples], data.val_split,
                                              seed)
        val = train.subset(val_index)
        train = train.subset(train_index)
    mean, std = _normalisation(data, dataset_info("folder"), volume)
    return Dataset("folder", train, val, FolderSplit(test_samples, volume, data.workers),
                   tuple(classes), mean, std, volume, str(root))
