"""A corpus row of a broken experiment file, and the one-line error every row must
give (tests/config/test_config_errors.py, tests/model/test_plan.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

USER_ERROR = 2
FAST_S = 5.0  # generous: only catches an alias bomb being expanded, not a benchmark

# The header of most rows: with it, layer k of a one-line-per-layer stack is on line 3 + k.
H = "model:\n  layers:\n"
IN8 = "    - input: {width: 8, height: 8, depth: 4}\n"


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes  # the experiment file
    fragments: tuple[str, ...]  # each must appear in the message
    line: int | None  # the `at line N` it must show; None: no line is checked
    args: tuple[str, ...] = ()  # extra command-line arguments (`--set ...`)
    names_set: bool = False  # the error is about a --set, which it names instead of the file
    fast: bool = False  # must be refused well under FAST_S seconds


def write_case(case: Case, directory: Path) -> Path:
    path = directory / f"{case.id}.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text, encoding="utf-8")
    return path


def check_message(case: Case, path: Path, code: int, out: str, err: str) -> None:
    assert "Traceback" not in err + out
    assert code == USER_ERROR, err
    assert out == ""
    assert err.startswith("error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, f"not one line:\n{err}"
    if not case.names_set:
        assert str(path) in err
    for fragment in case.fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    if case.line is not None:
        assert f"at line {case.line}:" in err, err
