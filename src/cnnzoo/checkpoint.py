"""Saving and loading weights and training state, safely.

Weights are safetensors (no code can hide in them) with a SHA-256 of every tensor
in the header, so a truncated or bit-flipped file is caught, not loaded. The
training state (`state.pt`: optimizer, scheduler, RNG, position) is only ever read
with `torch.load(weights_only=True)`, which refuses pickles that would run code.
Every file is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.errors import CheckpointError
from cnnzoo.files import atomic_write_bytes

FORMAT = "cnnzoo-weights-1"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "sha256": tensors_digest(tensors), **(metadata or {})}
    return save(tensors, metadata=meta)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> str:
    """Write the model's state_dict as safetensors; returns the tensors' digest."""
    data = weights_bytes(model, metadata)
    atomic_write_bytes(path, data)
    return _header(data, path)["__metadata__"]["sha256"]


def _header(data: bytes, path: Path) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"corrupt checkpoint {path}: {len(data)} bytes, not safetensors")
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        raise CheckpointError(
            f"corrupt checkpoint {path}: the header claims {size:,} bytes but the file has "
            f"{len(data):,} (truncated?)"
        )
    try:
        return json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"corrupt checkpoint {path}: the header is not JSON") from None


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a weights file, verified against its digest."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no weights file {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    header = _header(data, path)
    meta = header.get("__metadata__") or {}
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {exc}") from None
    expected = meta.get("sha256")
    if expected is None:
        raise CheckpointError(
            f"corrupt checkpoint {path}: no sha256 in its header; cnnzoo writes one into "
            "every weights file"
        )
    if tensors_digest(tensors) != expected:
        raise CheckpointError(
            f"corrupt checkpoint {path}: the tensors do not match the sha256 in its header "
            "(damaged or edited file)"
        )
    return tensors, meta


def check_compatible(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights whose tensors do not fit `model`, naming every mismatch."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = []
    for name in expected.keys() - given.keys():
        problems.append(f"{name} {list(expected[name])} is missing from the weights")
    for name in given.keys() - expected.keys():
        problems.append(f"{name} {list(given[name])} is not in the model")
    for name in expected.keys() & given.keys():
        if expected[name] != given[name]:
            problems.append(
                f"{name}: the weights have {list(given[name])}, the model {list(expected[name])}"
            )
    if problems:
        problems.sort()
        shown = "; ".join(problems[:12]) + (f"; and {len(problems) - 12} more"
                                            if len(problems) > 12 else "")
        raise CheckpointError(
            f"the weights in {source} do not fit the model of the config: {shown}"
        )


def load_into(model: nn.Module, path: Path) -> dict[str, str]:
    """Load verified weights into `model`; returns the file's metadata."""
    tensors, meta = load_weights(path)
    check_compatible(model, tensors, path)
    model.load_state_dict(tensors)
    return meta


def save_state(state: dict[str, Any], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Training state, read with weights_only=True: a pickle that would import or call
    anything beyond tensors and plain containers is refused before it runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no training state {path}") from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe pickle"
        raise CheckpointError(
            f"refused to load {path}: it is not a plain training state ({first}); "
            "cnnzoo never runs code from a checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"corrupt checkpoint {path}: not a cnnzoo training state")
    return state
