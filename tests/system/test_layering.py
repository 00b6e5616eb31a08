"""The layering contract in pyproject.toml, checked by import-linter: it names every
package of src/cnnzoo, it holds today, and it fails when a lower package imports a
higher one (a copy of the source with one such import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.common import ROOT

LAYERS_CONTRACT = "cnnzoo's packages, from the command line down to the leaf helpers"


def _layers() -> list[list[str]]:
    """The layers contract's packages, top to bottom; siblings share a layer."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


def lint_imports(cwd: Path, config: Path, src: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the `cnnzoo` found in `src` with the contracts of `config`."""
    script = Path(sys.executable).with_name("lint-imports")
    command = str(script) if script.exists() else shutil.which("lint-imports") or "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([command, "--no-cache", "--no-logo", str(config)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_contract_names_every_package_in_at_least_six_layers():
    layers = _layers()
    assert len(layers) >= 6
    named = {name for layer in layers for name in layer}
    packages = {f"cnnzoo.{p.parent.name}" for p in (ROOT / "src" / "cnnzoo").glob("*/__init__.py")}
    assert packages == named, "add a new package to [tool.importlinter] at its level"


@pytest.mark.slow
def test_the_packages_keep_to_their_layers():
    result = lint_imports(ROOT, ROOT / "pyproject.toml", ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.slow
def test_a_lower_package_importing_a_higher_one_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "cnnzoo", tmp_path / "src" / "cnnzoo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = tmp_path / "src" / "cnnzoo" / "utils" / "files.py"
    files.write_text(files.read_text() + "\nfrom cnnzoo.cli import app  # noqa: E402\n")
    result = lint_imports(tmp_path, tmp_path / "pyproject.toml", tmp_path / "src")
    assert result.returncode != 0, result.stdout[-3000:]
    assert f"{LAYERS_CONTRACT} BROKEN" in result.stdout
    assert "cnnzoo.utils.files -> cnnzoo.cli" in result.stdout
