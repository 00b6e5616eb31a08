"""Initial weights that come from the training images (a conv's `init: whitening`),
set once when a fresh run starts.

The sample is the first `SAMPLE_IMAGES` images of the train split (after the val split
is taken out, so the same on every run with the same seed), normalised as training
normalises them, without augmentation. The weights computed go into the run's
checkpoints with the others: a resumed run takes them from there, and a layer that
`--init-from` loaded keeps what it loaded, so nothing is computed twice.
"""

from __future__ import annotations

import torch

from cnnzoo.config.experiment import DataConfig
from cnnzoo.data.augment import BatchTransform
from cnnzoo.data.pipeline import Dataset
from cnnzoo.model.build import Network
from cnnzoo.runs.initfrom import InitReport

SAMPLE_IMAGES = 5000  # airbench94's sample for CIFAR-10's whitening


def sample_images(data: Dataset, config: DataConfig, size: int = SAMPLE_IMAGES) -> torch.Tensor:
    """The first `size` training images, normalised, on the CPU (N, D, H, W)."""
    images, _ = next(iter(data.train.eval_batches(size)))
    transform = BatchTransform(data.mean, data.std, config.augment, config.normalize,
                               torch.device("cpu"))
    return transform.normalize(images.cpu())


def initialise_from_images(model: Network, data: Dataset, config: DataConfig,
                           init_report: InitReport | None = None) -> list[str]:
    """Set the weights of every layer of `model` that takes them from the training images,
    except those that `--init-from` loaded (`init_report`); returns the names of the
    modules set (layers.1)."""
    loaded = set(init_report.loaded) if init_report is not None else set()
    # Only top-level layers: a layer that needs the images must see them (the planner
    # refuses it anywhere else).
    todo = [(f"layers.{i}", plan.spec) for i, plan in enumerate(model.plan.layers)
            if plan.spec.needs_images and f"layers.{i}.weight" not in loaded]
    if not todo:
        return []
    images = sample_images(data, config)
    for name, spec in todo:
        spec.initialise_from_images(model.get_submodule(name), images)
    return [name for name, _ in todo]
