"""The packed weights format (`cnnzoo-pretrained-1`): writing it, reading and verifying it.

A packed weights file (`configs/weights/NAME.safetensors`, installed as
`cnnzoo/configs/weights/`) holds what a finished run learned and nothing that the
config rebuilds by itself: the frozen kernels of `weights:` convs and batchnorm's
step counter are left out. Its header carries the resolved config, the class names
and the normalisation, so one file is enough to evaluate, predict, visualise, export
or fine-tune. Tensors stay fp32: `cnnzoo eval NAME --pretrained` then repeats the
recorded test accuracy exactly; fp16 would halve a set that is already small and
could move that accuracy by a few images.

Every file is checked before any tensor is used: against the SHA-256 its source
expects (a bundled record's, a URL's `#sha256=`) and against the digest in its own header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.config.experiment import ExperimentConfig, parse_config
from cnnzoo.errors import CheckpointError
from cnnzoo.model.build import Network, build_network
from cnnzoo.runs.checkpoint import parse_weights, tensors_digest
from cnnzoo.runs.fit import check_fit

PACKED_FORMAT = "cnnzoo-pretrained-1"
# What a packed file's header keeps of the run's run.json.
RUN_KEYS = ("name", "dataset", "classes", "mean", "std", "input", "precision")


def recomputable(name: str, module_params: dict[str, nn.Parameter], value: torch.Tensor,
                 fresh: dict[str, torch.Tensor]) -> bool:
    """True for a tensor a packed file leaves out: batchnorm's step counter, and a frozen
    parameter that the config builds with exactly this value (a fixed kernel)."""
    if name.endswith("num_batches_tracked"):
        return True
    param = module_params.get(name)
    return (param is not None and not param.requires_grad and name in fresh
            and torch.equal(fresh[name], value.cpu()))


def stored_tensors(model: Network) -> dict[str, torch.Tensor]:
    """The tensors of `model` that its config cannot rebuild, on the CPU."""
    fresh = build_network(model.plan).state_dict()
    params = dict(model.named_parameters())
    return {name: value.detach().cpu().contiguous()
            for name, value in model.state_dict().items()
            if not recomputable(name, params, value, fresh)}


def pack_bytes(model: Network, config: ExperimentConfig, info: dict[str, Any],
               test_accuracy: float) -> bytes:
    """A packed weights file's bytes: the tensors to keep, the config and run info."""
    from safetensors.torch import save

    tensors = stored_tensors(model)
    meta = {
        "format": PACKED_FORMAT,
        "name": config.name,
        "config": config.to_yaml(),
        "run": json.dumps({k: info[k] for k in RUN_KEYS if k in info}),
        "test_accuracy": repr(float(test_accuracy)),
    }
    meta["sha256"] = tensors_digest(tensors, meta)
    return save(tensors, metadata=meta)


@dataclass(frozen=True)
class Packed:
    """A packed weights file, read and verified."""

    source: str  # what the user named: a bundled config, a path or a URL
    path: Path
    sha256: str  # of the whole file
    config: ExperimentConfig
    info: dict[str, Any]  # name, dataset, classes, mean, std, input
    tensors: dict[str, torch.Tensor]
    test_accuracy: float | None


def read_packed(source: str, path: Path, expected: str | None) -> Packed:
    """Read and verify the packed file at `path`. A file whose hash is not `expected`
    is refused before safetensors parses a byte of it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read the weights file {path}: {exc.strerror}") from None
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected.lower():
        raise CheckpointError(
            f"corrupt weights file {path}: its SHA-256 is {actual}, the record says "
            f"{expected}; refusing to load it (reinstall cnnzoo, or fetch the file again)"
        )
    tensors, meta = parse_weights(data, path)
    if meta.get("format") != PACKED_FORMAT:
        raise CheckpointError(
            f"{path} is not a packed cnnzoo weights file (format {meta.get('format')!r}, "
            f"expected {PACKED_FORMAT!r}); a run's own model.safetensors is used through its "
            "run directory"
        )
    config = parse_config(meta["config"])
    info = json.loads(meta["run"])
    accuracy = float(meta["test_accuracy"]) if "test_accuracy" in meta else None
    return Packed(source, path, actual, config, info, tensors, accuracy)


def load_packed(model: Network, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load packed tensors into `model`, whose config rebuilt what the file leaves out."""
    fresh = model.state_dict()
    params = dict(model.named_parameters())
    rebuilt = [name for name, value in fresh.items()
               if recomputable(name, params, value, fresh)]
    check_fit(model, tensors, source, optional=rebuilt)
    model.load_state_dict(tensors, strict=False)
