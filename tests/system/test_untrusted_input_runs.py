"""Untrusted input, round three, for the commands that read or continue a run: a
finished run is not resumed, a run still training says so wherever it is read,
`--init-from` loads a layer whole or not at all and names a training state for what
it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

USER_ERROR = 2
SMALL = """
model:
  layers:
    - conv: {filters: 4, kernel: 3, activation: relu}
    - pool: 2
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.2}
train: {epochs: 2, batch_size: 50, optimizer: {name: sgd, lr: 0.05}}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("untrusted-runs")
    write_mnist(work / "data", n_train=200, n_test=50)
    write(work / "small.yaml", SMALL)
    return work


@pytest.fixture(scope="module")
def finished(work: Path) -> Path:
    """A run trained through the CLI, with its pictures, val split and test row."""
    from cnnzoo.cli.app import run

    out = work / "finished"
    code = run(["train", "-c", str(work / "small.yaml"), "--out", str(out), "--data-root",
                str(work / "data"), "-q"])
    assert code == 0
    return out


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resuming_a_finished_run_is_refused_and_changes_nothing(tmp_path, cli, work, finished):
    run = shutil.copytree(finished, tmp_path / "fin")
    before = _contents(run)
    assert {"results.json", "metrics.csv", "confusion.png"} <= set(before)
    result = cli("train", "--resume", run, "--data-root", work / "data", "-q")
    assert result.code == USER_ERROR
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert result.err.startswith(f"error: cannot resume {run}: the run is finished")
    assert f"cnnzoo eval {run}" in result.err and f"--init-from {run}" in result.err
    assert _contents(run) == before  # results, metrics, pictures and the lock, byte for byte
