"""The scripts import from the package inside functions (to start fast), where no
test runs them: each name they import from cnnzoo must exist, or a benchmark breaks
silently when the package moves a function."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.helpers.common import ROOT

SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))


def missing_names(path: Path) -> list[str]:
    """`module.name` for each `from cnnzoo... import name` in `path` that does not resolve."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] == "cnnzoo"):
            continue
        try:
            module = importlib.import_module(node.module)
        except ImportError:
            missing.append(node.module)
            continue
        for alias in node.names:
            if alias.name == "*" or hasattr(module, alias.name):
                continue
            try:  # a submodule not yet imported by its package
                importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
                missing.append(f"{node.module}.{alias.name}")
    return missing


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_imports_resolve(path: Path) -> None:
    assert missing_names(path) == []


def test_a_moved_name_is_seen(tmp_path: Path) -> None:
    script = tmp_path / "old.py"
    script.write_text("def main():\n    from cnnzoo.runs.load import evaluate_run, "
                      "load_run_model\n    from cnnzoo.nowhere import x\n")
    assert missing_names(script) == ["cnnzoo.runs.load.evaluate_run", "cnnzoo.nowhere"]
