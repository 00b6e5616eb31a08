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


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished runs (tests.helpers.runs' SMALL and DENSE) on fake Fashion-MNIST
    files, trained once for the callbacks', compare's and viz's tests."""
    from tests.helpers.runs import train_small_and_dense

    return train_small_and_dense(tmp_path_factory.mktemp("zoo"))
