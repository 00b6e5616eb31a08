"""Every command in the docs and the zoo's records is one a user can paste: no paths of
the machine it was measured on (/work/..., /tmp/..., a home folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.common import ROOT

MACHINE_PATH = re.compile(r"(?<![\w.~:/-])/(?:work|tmp|root|home)/\S*")
# Logs captured verbatim from a machine (a GPU's test output) quote their paths as printed.
CAPTURED_LOGS = {"docs/gpu-h100"}


def _documents() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "configs" / "results.json",
             *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "configs").rglob("*.yaml"))]
    return [f for f in files
            if not any(str(f.relative_to(ROOT)).startswith(d) for d in CAPTURED_LOGS)]


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths(path: Path) -> None:
    found = [(n, m.group(0)) for n, line in enumerate(path.read_text().splitlines(), 1)
             for m in MACHINE_PATH.finditer(line)]
    assert not found, f"{path.relative_to(ROOT)} names paths of a machine: {found[:5]}"


def test_the_rule_sees_machine_paths_and_spares_others() -> None:
    assert MACHINE_PATH.search("cnnzoo train --out /work/zoo-runs/lenet5")
    assert MACHINE_PATH.search("--runs /tmp/zoo-runs/x")
    for fine in ("--out runs/zoo/lenet5", "/usr/share/datasets/fashion-mnist/",
                 "https://example.org/tmp/x", "~/work/x", "runs/work/tmp"):
        assert not MACHINE_PATH.search(fine), fine
