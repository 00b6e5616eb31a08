"""The CPU side of speed: precision auto from the CPU's flags, the warning for emulated
bf16, the time budget's arithmetic (the rest: test_budget*.py), and glibc keeping freed
buffers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.model.cpu import (
    EMULATED_BF16_SLOWDOWN,
    bf16_support,
    choose_cpu_precision,
    cpu_flags,
    detect_bf16_support,
)
from cnnzoo.training.budget import steps_within
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

# Flags as /proc/cpuinfo lists them (the relevant part).
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile",
                   "amx_int8"}
ZEN4 = {"avx2", "avx512f", "avx512bw", "avx512_bf16"}
SKYLAKE_X = {"avx2", "avx512f", "avx512bw"}
HASWELL = {"avx2", "fma"}

CASES = [
    # flags, machine, ONEDNN_MAX_CPU_ISA, ATen level -> native unit, emulation level
    (SAPPHIRE_RAPIDS, "x86_64", None, "AVX512", "AMX", "AVX512_CORE"),
    (SAPPHIRE_RAPIDS, "x86_64", "AVX512_CORE_AMX", "AVX512", "AMX", "AVX512_CORE"),
    (SAPPHIRE_RAPIDS, "x86_64", "avx512_core_bf16", "AVX512", "AVX512-BF16", "AVX512_CORE"),
    (SAPPHIRE_RAPIDS, "x86_64", "AVX512_CORE", "AVX512", None, "AVX512_CORE"),
    (SAPPHIRE_RAPIDS, "x86_64", "AVX2", "AVX2", None, "AVX2"),
    (ZEN4, "x86_64", None, "AVX512", "AVX512-BF16", "AVX512_CORE"),
    (ZEN4, "x86_64", "AVX512_CORE_AMX", "AVX512", "AVX512-BF16", "AVX512_CORE"),
    (ZEN4, "x86_64", "AVX512_CORE", "AVX512", None, "AVX512_CORE"),
    (ZEN4, "x86_64", "AVX2", "AVX2", None, "AVX2"),
    (ZEN4, "x86_64", None, "AVX2", None, "AVX2"),  # ATEN_CPU_CAPABILITY=avx2 alone
    (ZEN4, "x86_64", "NOT_AN_ISA", "AVX512", "AVX512-BF16", "AVX512_CORE"),  # ignored
    (SKYLAKE_X, "x86_64", None, "AVX512", None, "AVX512_CORE"),
    (HASWELL, "x86_64", None, "AVX2", None, "AVX2"),
    ({"fp", "asimd", "bf16"}, "aarch64", None, "DEFAULT", None, "AVX2"),
]


@pytest.mark.parametrize(("flags", "machine", "isa", "aten", "unit", "level"), CASES)
def test_native_bf16_from_flags_and_caps(flags, machine, isa, aten, unit, level) -> None:
    support = bf16_support(flags, machine, isa, aten)
    assert (support.unit, support.level) == (unit, level)
    if isa and isa in ("AVX512_CORE", "AVX2"):
        assert f"ONEDNN_MAX_CPU_ISA={isa}" in support.reason


@pytest.mark.parametrize("support", [bf16_support(f, "x86_64", None, "AVX512")
                                     for f in (SAPPHIRE_RAPIDS, ZEN4, SKYLAKE_X, HASWELL)])
def test_precision_choice(support) -> None:
    auto = choose_cpu_precision("auto", support)
    assert auto.name == ("bf16" if support.unit else "fp32")
    assert auto.reason.startswith("auto: ") and auto.warning is None
    fp32 = choose_cpu_precision("fp32", support)
    assert (fp32.name, fp32.warning) == ("fp32", None)
    bf16 = choose_cpu_precision("bf16", support)
    assert bf16.name == "bf16"
    if support.unit:
        assert bf16.warning is None
    else:
        factor = EMULATED_BF16_SLOWDOWN[support.level]
        assert bf16.warning is not None and "\n" not in bf16.warning
        assert f"{factor:g}x slower" in bf16.warning
        assert "--set train.precision=fp32" in bf16.warning


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path) -> None:
    info = write(tmp_path / "cpuinfo", "processor\t: 0\nmodel name\t: X\n"
                 "flags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: other\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_onednn_cap_is_honoured_on_this_machine(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert detect_bf16_support().unit is None


@pytest.mark.slow  # trains in a process of its own at the AVX2 level
def test_start_line_says_precision_and_why(tmp_path: Path) -> None:
    """In a process whose CPU is capped at AVX2: auto trains in fp32 and says why; an
    explicit bf16 still trains, after one warning line."""
    write_mnist(tmp_path / "data")
    config = write(tmp_path / "tiny.yaml", textwrap.dedent("""\
        model: {layers: [{conv: {filters: 4, kernel: 3}}, {pool: 4}, {fc: 10}]}
        data: {dataset: fashion_mnist, val_split: 0, limit_train: 64, limit_test: 32}
        train: {epochs: 1, batch_size: 32}
        """))
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    lines = {}
    for precision in ("auto", "bf16"):
        proc = subprocess.run(
            [sys.executable, "-m", "cnnzoo", "train", "--config", str(config), "--data-root",
             str(tmp_path / "data"), "--out", str(tmp_path / precision),
             "--set", f"train.precision={precision}"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, **env})
        assert proc.returncode == 0, proc.stderr
        lines[precision] = (proc.stdout.splitlines()[0],
                            [x for x in proc.stderr.splitlines() if x.startswith("warning")])
    assert "fp32 (auto: ONEDNN_MAX_CPU_ISA=AVX2" in lines["auto"][0]
    assert lines["auto"][1] == []
    assert "bf16 (as configured)" in lines["bf16"][0]
    assert len(lines["bf16"][1]) == 1 and "slower than fp32" in lines["bf16"][1][0]


@pytest.mark.parametrize("value", ["bf17", "BF16", "true"])
def test_unknown_precision_is_a_config_error(cli, value: str) -> None:
    result = cli("summary", "--config", "fashion-speedrun", "--set", f"train.precision={value}")
    assert result.code == 2
    assert "precision must be one of auto, fp32, bf16, fp16" in result.err
    assert "Traceback" not in result.err


def test_time_budget_must_be_a_positive_number(cli) -> None:
    result = cli("summary", "--config", "fashion-speedrun", "--set", "train.time_budget=0")
    assert result.code == 2 and "time_budget" in result.err


@pytest.mark.parametrize(("budget", "elapsed", "done", "per_step", "expected"), [
    (100.0, 10.0, 25, 0.5, 25 + 180),  # 90 s left at 0.5 s a step
    (100.0, 10.0, 25, 0.01, 1000),  # everything fits: the configured epochs
    (100.0, 120.0, 25, 0.5, 25),  # already over: stop where it is
    (100.0, 10.0, 25, 0.7, 25 + 128),  # 90 / 0.7 = 128.6: whole steps only
])
def test_steps_within(budget, elapsed, done, per_step, expected) -> None:
    assert steps_within(budget, elapsed, done, per_step, max_steps=1000) == expected


GLIBC_CHURN = """
import ctypes, resource, sys
sys.path.insert(0, {src!r})
from cnnzoo.model.cpu import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 8 << 20
def churn():
    for _ in range(5):
        buffers = [libc.malloc(size) for _ in range(4)]
        for buffer in buffers:
            ctypes.memset(buffer, 1, size)
        for buffer in buffers:
            libc.free(ctypes.c_void_p(buffer))
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_kept_instead_of_faulted_in_again() -> None:
    """Rounds of four 8 MiB buffers (2,048 pages each), like the activations of a
    training step: by default glibc hands the freed 32 MiB back (unmapped or trimmed
    off the heap) and faults it in again every round; with keep_freed_memory the pages
    are kept."""
    src = str(Path(cnnzoo.__file__).parents[1])
    faults = {}
    for keep in (False, True):
        proc = subprocess.run([sys.executable, "-c", GLIBC_CHURN.format(src=src, keep=keep)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        faults[keep] = int(proc.stdout)
    assert faults[False] >= 5 * 4 * 2048 * 0.9
    assert faults[True] < 2048
