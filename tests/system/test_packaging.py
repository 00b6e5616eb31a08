"""pyproject.toml: every package imported is declared, the version is written once,
the licence file is there."""

from __future__ import annotations

import ast
import re
import sys

import pytest

import cnnzoo
from tests.helpers.common import ROOT

tomllib = pytest.importorskip("tomllib")

# Import names that differ from the names on PyPI.
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for r in requirements}


def imported_packages() -> set[str]:
    """The top-level packages that cnnzoo's modules import, standard library excluded."""
    names = set()
    for path in (ROOT / "src" / "cnnzoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "cnnzoo"}


def test_every_imported_package_is_declared():
    project = pyproject()["project"]
    declared = requirement_names(project["dependencies"])
    optional = {name for extra, reqs in project["optional-dependencies"].items()
                if extra != "test" for name in requirement_names(reqs)}
    imported = {DISTRIBUTION.get(name, name).lower() for name in imported_packages()}
    assert {"numpy", "pillow", "torch"} <= imported  # the walk found the imports
    assert imported - declared - optional == set()


def test_the_version_is_written_once():
    project = pyproject()
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    source = ROOT / project["tool"]["hatch"]["version"]["path"]
    assert re.findall(r'^__version__ = "([^"]+)"$', source.read_text(), re.M) == [
        cnnzoo.__version__]


def test_the_licence_file_matches_the_declared_licence():
    assert pyproject()["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "cnnzoo contributors" in text


def test_the_readme_test_command_keeps_its_extra():
    assert "'.[test]'" in (ROOT / "README.md").read_text()
    assert "pytest" in requirement_names(pyproject()["project"]["optional-dependencies"]["test"])


def test_the_readme_says_how_to_install_the_cpu_build_of_torch():
    assert "--index-url https://download.pytorch.org/whl/cpu" in (ROOT / "README.md").read_text()
