"""The fixtures every test package shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.common import Result


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `cnnzoo ARGS...` in this process; returns exit code, stdout, stderr."""
    from cnnzoo.cli.app import run

    def invoke(*args: str | Path) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke
