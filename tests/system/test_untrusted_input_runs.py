"""Untrusted input, round three, for the commands that read or continue a run: a
finished run is not resumed, a run still training says so wherever it is read,
`--init-from` loads a layer whole or not at all and names a training state for what
it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.untrusted import USER_ERROR, small_workspace


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_workspace(tmp_path_factory.mktemp("untrusted-runs"), val_split=0.2, epochs=2)


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


WIDE = """
model:
  layers:
    - input: {width: 8, height: 8, depth: 1}
    - conv: {filters: 16, kernel: 3}
    - relu
    - conv: {filters: 16, kernel: 3}
    - relu
    - global_pool
    - fc: 10
"""


def test_init_from_loads_a_layer_whole_or_not_at_all(tmp_path, capsys):
    """The first conv narrowed to 8 filters: the second conv's bias still has the trained
    shape, its weight (8 input channels, not 16) does not; neither is loaded."""
    import torch

    import cnnzoo
    from cnnzoo.runs.checkpoint import save_weights
    from cnnzoo.runs.initfrom import initialise_from

    torch.manual_seed(1)
    trained = cnnzoo.build_model(cnnzoo.parse_config(WIDE))
    weights = tmp_path / "trained.safetensors"
    save_weights(trained, weights)
    torch.manual_seed(2)
    narrow = cnnzoo.build_model(cnnzoo.parse_config(WIDE.replace("filters: 16", "filters: 8",
                                                                 1)))
    fresh = {k: v.clone() for k, v in narrow.state_dict().items()}
    report = initialise_from(narrow, str(weights))
    line = capsys.readouterr().out
    state, source = narrow.state_dict(), trained.state_dict()
    assert state["layers.3.bias"].shape == source["layers.3.bias"].shape
    for name in ("layers.1.weight", "layers.1.bias", "layers.3.weight", "layers.3.bias"):
        assert torch.equal(state[name], fresh[name]), f"{name} changed"
    for name in ("layers.6.weight", "layers.6.bias"):
        assert torch.equal(state[name], source[name]), f"{name} not loaded"
    assert report.loaded == ("layers.6.weight", "layers.6.bias")
    assert "loaded 2 tensors (layers.6);" in line
    assert "layers.3.bias (the rest of layers.3 does not fit)" in line


@pytest.mark.slow
def test_init_from_a_training_state_says_what_it_is(tmp_path, cli, work, finished):
    out = tmp_path / "new"
    result = cli("train", "-c", work / "small.yaml", "--init-from", finished / "state.pt",
                 "--data-root", work / "data", "--out", out, "-q")
    assert result.code == USER_ERROR
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert f"{finished / 'state.pt'} is a torch.save archive" in result.err
    assert "training state" in result.err and "bytes" not in result.err
    assert f"give {finished / 'model.safetensors'} or its run directory {finished}" in result.err
    assert not out.exists()
    pretrained = cli("eval", finished / "state.pt", "--pretrained")
    assert pretrained.code == USER_ERROR and "training state" in pretrained.err


@pytest.fixture
def live(tmp_path, finished):
    """A copy of the run as it stood after its first epoch, held by another live process
    the way `cnnzoo train` holds a run it trains into (the run directory's flock)."""
    import subprocess
    import sys

    run = shutil.copytree(finished, tmp_path / "long")
    (run / "results.json").unlink()
    metrics = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(line for line in metrics
                                             if line.split(",")[0] in ("epoch", "1")))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from cnnzoo.runs.lock import lock_run; lock_run(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(300)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield run, holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_run_still_training_says_so_wherever_it_is_read(tmp_path, cli, work, live):
    import numpy as np
    from PIL import Image

    run, pid = live
    image = tmp_path / "shirt.png"
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(image)
    line = (f"warning: {run} is still training (epoch 2/2, process {pid}): what is read is "
            "the checkpoint after epoch 1, not the finished run\n")
    readers = {
        "eval": ["eval", run, "--data-root", work / "data"],
        "predict": ["predict", run, image],
        "viz": ["viz", run, "-i", image, "-o", tmp_path / "v.png"],
        "export": ["export", run, "-f", "torchscript", "-o", tmp_path / "m.pt"],
        "init-from": ["train", "-c", work / "small.yaml", "--init-from", run, "--data-root",
                      work / "data", "--out", tmp_path / "new", "-q"],
    }
    for name, args in readers.items():
        result = cli(*args)
        assert result.code == 0, (name, result.err)
        assert line in result.err, (name, result.err)
    compared = cli("compare", run, "--no-plot")
    assert compared.code == 0 and "still training (epoch 2/2)" in compared.out
    assert "still training" not in cli("eval", work / "finished", "--data-root",
                                       work / "data").err
