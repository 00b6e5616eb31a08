"""The zoo's records name the machine by CPU and instruction level, and keep commands a
user can paste."""

from __future__ import annotations

import json

from cnnzoo.zoo.measure import instruction_level, machine_info, machine_text, pasteable
from tests.helpers.common import ROOT

LEVELS = ("AMX", "AVX512_BF16", "AVX512_CORE", "AVX2")


def test_machine_text_names_the_instruction_level() -> None:
    machine = {"cpu": "AMD EPYC", "level": "AVX512_BF16", "cores": 2, "torch": "2.14.1"}
    assert machine_text(machine) == "AMD EPYC, AVX512_BF16, 2 cores, torch 2.14.1"
    assert machine_text({**machine, "level": None}) == "AMD EPYC, 2 cores, torch 2.14.1"
    assert instruction_level() in LEVELS
    assert machine_info()["level"] == instruction_level()


def test_the_level_follows_the_libraries_cap(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert instruction_level() == "AVX2"


def test_a_recorded_command_puts_the_run_under_runs_zoo() -> None:
    command = ["train", "--config", "lenet5", "--device", "cpu", "--out", "/work/x/lenet5"]
    assert pasteable(command)[-2:] == ["--out", "runs/zoo/lenet5"]
    assert pasteable(["train", "--config", "lenet5"]) == ["train", "--config", "lenet5"]


def test_every_bundled_record_names_a_known_level() -> None:
    records = json.loads((ROOT / "configs" / "results.json").read_text())["configs"]
    for name, record in records.items():
        assert any(f", {level}, " in record["machine"] for level in LEVELS), name
