"""What this CPU computes natively, and the precision `auto` trains in on it.

bf16 only pays where the CPU multiplies bf16 itself: AMX tiles (Intel Sapphire
Rapids and later) or AVX512-BF16 dot products (Intel Cooper Lake, AMD Zen 4 and
later). Elsewhere oneDNN emulates bf16 by converting to fp32 and back, which is
slower than fp32 itself. The decision is read from the CPU's flags, capped where
the user limits the libraries: `ONEDNN_MAX_CPU_ISA` for oneDNN's convolutions and
matrix products, and ATen's vector level (`ATEN_CPU_CAPABILITY`) for the element-wise
work. Reading flags costs nothing at start-up and gives the same answer every time,
where a timed trial would cost seconds and vary with the machine's load; the speed
factors it rests on are measured (docs/performance.md).

The functions below the detection are pure, so tests drive them with made-up flags
and environments.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:
    import torch

# oneDNN's ONEDNN_MAX_CPU_ISA values that still allow bf16 arithmetic (the native
# instructions). The lower values stop at AVX512_CORE (fp32 vectors, bf16 emulated).
BF16_ISAS = {
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
    "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
    "AVX10_2_512_AMX_2", "ALL", "DEFAULT",
}
AMX_ISAS = {"AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16",
            "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}
# Caps below bf16, so that a cap is told apart from a value oneDNN does not know (which
# it ignores, and so do we).
NO_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                "AVX512_CORE_VNNI", "AVX512_MIC", "AVX512_MIC_4OPS"}

# How much slower bf16 trains than fp32 where it is emulated: training steps of
# fashion-speedrun (batch 256, channels_last, one thread, CPU time) on a Zen 4 with
# oneDNN, ATen and MKL capped to each level (1,395 vs 601 and 1,221 vs 115 images/s).
EMULATED_BF16_SLOWDOWN = {"AVX512_CORE": 2.3, "AVX2": 11.0}


@dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 arithmetic is native here, and the words that say why."""

    unit: str | None  # "AMX" or "AVX512-BF16" when native, else None
    reason: str  # e.g. "the CPU has AVX512-BF16" or "ONEDNN_MAX_CPU_ISA=AVX2 limits oneDNN"
    level: str  # the vector level bf16 would be emulated at: AVX512_CORE or AVX2


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run trains in, why, and a warning when it will be slow."""

    name: str  # fp32, bf16 or fp16
    reason: str
    warning: str | None = None


def bf16_support(flags: set[str], machine: str, onednn_max_isa: str | None,
                 aten_capability: str | None) -> Bf16Support:
    """Native bf16 from the CPU's /proc/cpuinfo `flags`, capped by the libraries' limits.

    `aten_capability` is what `torch.backends.cpu.get_cpu_capability()` reports (it
    honours ATEN_CPU_CAPABILITY): below AVX512 the element-wise work (batchnorm, ReLU)
    would convert every bf16 value in software.
    """
    if machine.lower() not in ("x86_64", "amd64"):
        return Bf16Support(None, f"bf16 speed is not measured on {machine} CPUs", "AVX2")
    has_avx512 = "avx512f" in flags and "avx512bw" in flags
    level = "AVX512_CORE" if has_avx512 else "AVX2"
    isa = (onednn_max_isa or "").strip().upper()
    if isa in NO_BF16_ISAS:
        capped = "AVX512_CORE" if isa.startswith("AVX512") else "AVX2"
        return Bf16Support(None, f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN from bf16 "
                           "instructions", capped if has_avx512 else "AVX2")
    aten = (aten_capability or "").upper()
    if aten and not aten.startswith("AVX512"):
        return Bf16Support(None, f"ATen's vector level is {aten}", "AVX2")
    if {"amx_bf16", "amx_tile"} <= flags and isa not in BF16_ISAS - AMX_ISAS:
        return Bf16Support("AMX", "the CPU has AMX", level)
    if "avx512_bf16" in flags:
        return Bf16Support("AVX512-BF16", "the CPU has AVX512-BF16", level)
    return Bf16Support(None, "the CPU has neither AVX512-BF16 nor AMX", level)


def choose_cpu_precision(requested: str, support: Bf16Support) -> PrecisionChoice:
    """`auto` is bf16 exactly where it is native; an explicit bf16 elsewhere still runs,
    with a warning that says how much slower and how to switch."""
    assert requested in ("auto", "bf16", "fp32"), requested
    if requested == "fp32":
        return PrecisionChoice("fp32", "as configured")
    if support.unit is not None:
        how = "as configured" if requested == "bf16" else "auto"
        return PrecisionChoice("bf16", f"{how}: {support.reason}, which computes bf16 natively")
    if requested == "auto":
        return PrecisionChoice("fp32", f"auto: {support.reason}, so bf16 would be emulated")
    factor = EMULATED_BF16_SLOWDOWN.get(support.level, EMULATED_BF16_SLOWDOWN["AVX2"])
    return PrecisionChoice(
        "bf16", "as configured",
        warning=(f"warning: precision bf16 is emulated here ({support.reason}): about "
                 f"{factor:g}x slower than fp32 (measured at the {support.level} level); "
                 "switch with --set train.precision=fp32, or precision: auto"),
    )


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (`flags` on x86, `Features` on ARM); empty if unknown."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def detect_bf16_support() -> Bf16Support:
    """This machine's answer, honouring ONEDNN_MAX_CPU_ISA (or its old name
    DNNL_MAX_CPU_ISA) and ATEN_CPU_CAPABILITY."""
    import torch

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return bf16_support(cpu_flags(), platform.machine(), isa,
                        torch.backends.cpu.get_cpu_capability())


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for the next allocation instead of handing it back.

    A training step frees and re-takes the same activation buffers (a few MB each).
    By default glibc serves those with fresh mmaps or trims them off the heap's top,
    so every step faults in and zeroes the same pages again: millions of page faults
    a run. With the mmap threshold at its maximum and trimming off, the buffers come
    back from the heap. Returns False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(name)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    )


def choose_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """The precision `fit` trains in on `device`, with the reason the start line gives."""
    import torch

    if device.type == "cpu":
        if requested == "fp16":
            raise CnnzooError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return choose_cpu_precision(requested, detect_bf16_support())
    if requested != "auto":
        return PrecisionChoice(requested, "as configured")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return PrecisionChoice("bf16", "auto: the GPU computes bf16")
    return PrecisionChoice("fp32", f"auto: bf16 is not used on {device.type}")
