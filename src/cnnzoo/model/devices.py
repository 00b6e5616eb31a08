"""Where and how arithmetic runs: the device, the precision, the memory layout."""

from __future__ import annotations

import contextlib

import torch

from cnnzoo.errors import CnnzooError
from cnnzoo.model.cpu import choose_precision
from cnnzoo.model.plan import Plan
from cnnzoo.utils.auto import resolve


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _auto_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if _mps_available() else "cpu"


def resolve_device(requested: str) -> torch.device:
    """`auto`: CUDA, else Apple's MPS, else the CPU; a named device must exist."""
    device = torch.device(resolve(requested, _auto_device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnzooError(f"device {requested} requested but CUDA is not available; use cpu")
    if device.type == "cuda" and device.index is not None and (
        device.index >= torch.cuda.device_count()
    ):
        raise CnnzooError(
            f"device {requested} requested but there are {torch.cuda.device_count()} GPUs"
        )
    if device.type == "mps" and not _mps_available():
        raise CnnzooError(f"device {requested} requested but MPS is not available; use cpu")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto`: bf16 where the device computes it fast (cnnzoo.model.cpu decides for the CPU),
    fp32 elsewhere."""
    return choose_precision(requested, device).name


def resolve_channels_last(setting: bool | str, plan: Plan, device: torch.device) -> bool:
    """`auto`: NHWC for networks with convolutions on the CPU and CUDA, where the
    convolution kernels (oneDNN, cuDNN tensor cores) are faster in that layout; on
    this project's 2-core CPU it trains LeNet-5 1.7x faster."""
    return resolve(setting, lambda: device.type in ("cpu", "cuda") and any(
        layer.type_name == "conv" for layer in plan.walk()))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def device_name(device: torch.device) -> str:
    """The device as the start line and results.json name it."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return str(device)
