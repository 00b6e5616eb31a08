"""Saving and loading weights and training state, safely.

Weights are safetensors (no code can hide in them) with a SHA-256 of every tensor
and of the metadata in the header, so a truncated or bit-flipped file is caught, not
loaded. The training state (`state.pt`: weights, optimizer, scheduler, RNG,
position) is only ever read with `torch.load(weights_only=True)`, which refuses
pickles that would run code, and carries a SHA-256 of its whole content. Every file
is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.errors import CheckpointError
from cnnzoo.runs.fit import check_fit
from cnnzoo.utils.files import atomic_write_bytes

FORMAT = "cnnzoo-weights-2"
STATE_FORMAT = "cnnzoo-state-2"
ZIP_MAGIC = b"PK\x03\x04"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # reshape(-1): a 0-d tensor (batchnorm's num_batches_tracked) cannot be viewed as bytes
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensors_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """SHA-256 over the metadata (but a `sha256` entry) and every tensor's name, dtype,
    shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key, value in sorted((metadata or {}).items()):
        if key != "sha256":
            digest.update(f"meta|{key}|{value}|".encode())
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(_tensor_bytes(t))
    return digest.hexdigest()


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {**(metadata or {}), "format": FORMAT}
    meta["sha256"] = tensors_digest(tensors, meta)
    return save(tensors, metadata=meta)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> str:
    """Write the model's state_dict as safetensors; returns the tensors' digest."""
    data = weights_bytes(model, metadata)
    atomic_write_bytes(path, data)
    return _header(data, path)["__metadata__"]["sha256"]


def _header(data: bytes, path: Path) -> dict[str, Any]:
    if data[:4] == ZIP_MAGIC:  # torch.save writes zip archives (as a safetensors header
        # length, these bytes would claim 67 MB of header)
        weights = Path(path).parent / "model.safetensors"
        instead = (f"give {weights} or its run directory {weights.parent}" if weights.is_file()
                   else "give a run directory or a .safetensors weights file")
        raise CheckpointError(
            f"{path} is a torch.save archive, such as a run's training state (state.pt, what "
            f"`train --resume` reads), not a weights file; {instead}")
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
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no weights file {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    return parse_weights(data, path)


def parse_weights(data: bytes, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata in the bytes of a weights file read from `path`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    header = _header(data, path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"corrupt checkpoint {path}: its metadata is not a mapping of "
                              "strings")
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
    # cnnzoo-weights-1 hashed the tensors only; its files still load
    covered = None if meta.get("format") == "cnnzoo-weights-1" else meta
    if tensors_digest(tensors, covered) != expected:
        if meta.get("format") not in (FORMAT, "cnnzoo-weights-1"):
            raise CheckpointError(
                f"corrupt checkpoint {path}: its format is {meta.get('format')!r}, not "
                f"{FORMAT!r} (damaged, or written by another version of cnnzoo)"
            )
        raise CheckpointError(
            f"corrupt checkpoint {path}: the tensors or metadata do not match the sha256 in "
            "its header (damaged or edited file)"
        )
    return tensors, meta


def load_into(model: nn.Module, path: Path) -> dict[str, str]:
    """Load verified weights into `model`; returns the file's metadata."""
    tensors, meta = load_weights(path)
    check_fit(model, tensors, path)
    model.load_state_dict(tensors)
    return meta


def state_digest(value: Any) -> str:
    """SHA-256 over a training state: nested dicts, lists, tensors and plain values."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(f"T|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(_tensor_bytes(value))
    elif isinstance(value, dict):
        digest.update(f"D|{len(value)}|".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}=".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L|{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}|{value!r}|".encode())


def save_state(state: dict[str, Any], path: Path) -> None:
    """Write a training state with a digest of its content, atomically."""
    state = {**state, "format": STATE_FORMAT}
    state["sha256"] = state_digest(state)
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
        raise CheckpointError(
            f"refused to load {path}: {_unsafe_reason(str(exc))}; cnnzoo never runs code "
            "from a checkpoint (it is damaged, or was not written by cnnzoo)"
        ) from None
    except Exception as exc:  # torch.load on a damaged file can raise almost anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"corrupt checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"corrupt checkpoint {path}: not a cnnzoo training state")
    expected = state.pop("sha256", None)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"corrupt checkpoint {path}: its format is {state.get('format')!r}, not "
            f"{STATE_FORMAT!r} (damaged, or written by another version of cnnzoo)"
        )
    if expected != state_digest(state):
        raise CheckpointError(
            f"corrupt checkpoint {path}: its content does not match the sha256 it was saved "
            "with (damaged or edited file)"
        )
    return state


def _unsafe_reason(message: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to turn it off."""
    for line in message.splitlines():
        found = re.search(r"GLOBAL ([\w.]+)", line)
        if found:
            return f"its pickle would import and call {found.group(1)}"
        if "Unsupported operand" in line or "Unsupported class" in line:
            return f"its pickle is not plain data ({line.strip().rstrip('.')})"
    return "its pickle is not plain data"
