"""The shape of the code itself: no import cycles among cnnzoo's modules (counting
imports inside functions and under TYPE_CHECKING), the commands that only read
configs answer without importing torch, short modules and functions, and packages
instead of prefixed siblings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Every cnnzoo module and the cnnzoo modules it imports anywhere in its text."""
    paths = {_module_name(p): p for p in (SRC / "cnnzoo").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    # `from cnnzoo import runs` imports the module cnnzoo.runs.rundir
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in paths else base)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    # cli imports every command's implementation inside the command's function
    assert "cnnzoo.model.plan" in graph["cnnzoo.cli.language"]
    assert "cnnzoo.layers.spec" in graph["cnnzoo.layers.registry"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def _commands() -> list[str]:
    from cnnzoo.cli.app import app

    return [c.name or c.callback.__name__ for c in app.registered_commands]


TORCH_FREE = [
    ["--help"],
    *([name, "--help"] for name in _commands()),
    ["summary", "--config", "lenet5"],
    ["summary", "--config", "lenet5", "--json"],
    ["layers"],
    ["schema"],
    ["zoo"],
    ["summary", "--config", "lenet5", "--set", "train.epochs=0"],  # a config error
    ["summary", "--config", "no-such-config"],
]


@pytest.mark.slow
@pytest.mark.parametrize("argv", TORCH_FREE, ids=" ".join)
def test_command_does_not_import_torch(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from cnnzoo.cli.app import run\n"
        f"code = run({argv!r})\n"
        "print('TORCH', 'torch' in sys.modules, code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("TORCH False"), done.stderr[-2000:]
    expected = 2 if any(a in ("train.epochs=0", "no-such-config") for a in argv) else 0
    assert last.endswith(str(expected)), done.stderr[-2000:]


@pytest.mark.slow
def test_check_itself_sees_torch() -> None:
    """The same check on a command that builds a network does see torch."""
    code = ("import sys\nimport cnnzoo\n"
            "cnnzoo.build_model(cnnzoo.plan_experiment(cnnzoo.load_config('lenet5')))\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def _too_long(paths: list[Path], module_limit: int, function_limit: int | None,
              root: Path = SRC.parent) -> list[str]:
    """Every module over `module_limit` lines and function (methods and nested functions
    included) over `function_limit`, named by its path under `root`."""
    found = []
    for path in paths:
        text = (root / path).read_text()
        lines = len(text.splitlines())
        where = (root / path).relative_to(root)
        if lines > module_limit:
            found.append(f"{where}: {lines} lines")
        if function_limit is None:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > function_limit:
                    found.append(f"{where}: {node.name} is {length} lines")
    return found


def test_modules_and_functions_are_short() -> None:
    """Modules of at most 500 lines and functions of at most 80 in src/cnnzoo, so that
    each part can be read whole; the scripts stay thin drivers (under 250 lines)."""
    assert _too_long(sorted((SRC / "cnnzoo").rglob("*.py")), 500, 80) == []
    scripts = sorted((SRC.parent / "scripts").glob("*.py"))
    assert scripts
    assert _too_long(scripts, 249, None) == []


def test_size_check_sees_long_modules_and_long_methods(tmp_path: Path) -> None:
    body = "".join(f"        x = {i}\n" for i in range(80))
    path = tmp_path / "long.py"
    path.write_text(f"class A:\n    def method(self):\n{body}" + "y = 1\n" * 420)
    found = _too_long([path.relative_to(tmp_path)], 500, 80, root=tmp_path)
    assert found == ["long.py: 502 lines", "long.py: method is 81 lines"]


def test_test_files_are_short() -> None:
    """Test files of at most 500 lines: a file that outgrows that holds two concerns."""
    tests = SRC.parent / "tests"
    assert _too_long(sorted(tests.rglob("*.py")), 500, None, root=tests.parent) == []


def prefixed_siblings(package: Path) -> list[str]:
    """Modules or packages named after a sibling in the same folder (zoo_run.py beside
    zoo.py or zoo/): a package that is missing."""
    found = []
    for folder in sorted({package, *(p.parent for p in package.rglob("__init__.py"))}):
        names = sorted({p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
                       | {p.parent.name for p in folder.glob("*/__init__.py")})
        found += [f"{folder.relative_to(package.parent)}: {longer} carries {name}'s name"
                  for name in names for longer in names
                  if longer != name and longer.startswith(name)]
    return found


def test_src_has_packages_not_prefixed_siblings() -> None:
    top = sorted(p.name for p in (SRC / "cnnzoo").glob("*.py"))
    assert len(top) <= 5, top
    assert prefixed_siblings(SRC / "cnnzoo") == []


def test_prefix_check_finds_a_prefixed_sibling(tmp_path: Path) -> None:
    for name in ("pkg/__init__.py", "pkg/zoo.py", "pkg/zoo_run.py", "pkg/sub/__init__.py",
                 "pkg/sub_report.py", "pkg/tune/__init__.py", "pkg/tune/report.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    assert prefixed_siblings(tmp_path / "pkg") == [
        "pkg: sub_report carries sub's name", "pkg: zoo_run carries zoo's name"]
