"""Untrusted input, round three, for the commands that write: an output that cannot be
written (a read-only folder, /proc, a file where a folder should be) is one message
naming it and the fix, exit code 2, before any work, and nothing is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnzoo
from cnnzoo.training.trainer import fit
from tests.helpers.common import Result, write
from tests.helpers.untrusted import USER_ERROR, small_config, small_workspace

SMALL = small_config()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = small_workspace(tmp_path_factory.mktemp("untrusted-outputs"), train=True)
    pixels = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(work / "shirt.png")
    return work


def _commands(work: Path, place: Path) -> dict[str, list[str | Path]]:
    """Every command that writes a file or a folder, told to write it into `place`."""
    run, image = work / "run", work / "shirt.png"
    return {
        "export": ["export", run, "-f", "torchscript", "-o", place / "m.pt"],
        "viz to a picture": ["viz", run, "-i", image, "-o", place / "a.png"],
        "viz to a folder": ["viz", run, "-i", image, "-o", place / "vd"],
        "filter": ["filter", image, "-k", "box_blur", "-o", place / "f.png"],
        "compare's plot": ["compare", run, "--plot", place / "c.png"],
        "schema": ["schema", "-o", place / "s.json"],
        "train": ["train", "-c", work / "small.yaml", "--data-root", work / "data", "-q",
                  "--out", place / "newrun"],
    }


COMMANDS = list(_commands(Path("w"), Path("p")))


def _refused(result: Result, place: Path) -> None:
    assert result.code == USER_ERROR, result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert result.err.startswith("error: ") and str(place) in result.err
    assert "choose another" in result.err  # the fix: --out, --plot


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_in_proc_is_refused_before_the_run_is_read(cli, work, monkeypatch, command):
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the output must be checked before the run is read")

    monkeypatch.setattr("cnnzoo.runs.load.load_run_model", never)
    monkeypatch.setattr("cnnzoo.training.trainer.load_dataset", never)
    result = cli(*_commands(work, Path("/proc"))[command])
    _refused(result, Path("/proc"))
    assert "/proc does not take new files" in result.err


def _without_write_override(args: list[str | Path], cwd: Path) -> Result:
    """`python -m cnnzoo ARGS` held to the permission bits: as root, with the capability
    that overrides them dropped (a root process otherwise writes into any folder)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to drop root's CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set", "-dac_override", "--"]
    proc = subprocess.run([*prefix, sys.executable, "-m", "cnnzoo", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_in_a_read_only_folder_is_refused_and_leaves_nothing(tmp_path, work,
                                                                      command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = _without_write_override(_commands(work, locked)[command], tmp_path)
        _refused(result, locked)
        assert f"no permission to create files in {locked}" in result.err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
def test_train_in_a_read_only_folder_without_out_is_refused_before_the_data(tmp_path, work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = _without_write_override(["train", "-c", work / "small.yaml", "--data-root",
                                          tmp_path / "no-data-here", "-q"], locked)
        assert result.code == USER_ERROR and result.err.count("\n") == 1
        assert result.err.startswith("error: --out runs/small-")  # not "dataset not found"
        assert "no permission to create files in ." in result.err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["export", "viz to a picture", "filter", "schema"])
def test_a_file_where_a_folder_should_be_is_refused(tmp_path, cli, work, command):
    blocker = write(tmp_path / "afile", "not a folder\n")
    result = cli(*_commands(work, blocker / "sub")[command])
    assert result.code == USER_ERROR and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and str(blocker) in result.err
    assert blocker.read_text() == "not a folder\n"


def test_filter_on_a_one_pixel_image_names_its_own_option(tmp_path, cli):
    image = tmp_path / "dot.png"
    Image.new("L", (1, 1), 100).save(image)
    result = cli("filter", image, "-k", "box_blur", "-o", tmp_path / "f.png")
    assert result.code == USER_ERROR and result.err.count("\n") == 1
    assert result.err.rstrip().endswith("use --padding-mode symmetric, replicate or zeros")
    assert "padding_mode:" not in result.err and not (tmp_path / "f.png").exists()
    assert cli("filter", image, "-k", "box_blur", "--padding-mode", "zeros", "-o",
               tmp_path / "f.png").code == 0


def _trained(out: Path, data: Path, layers: str) -> Path:
    """A run of `layers` trained for an epoch on the fake data in `data`."""
    config = cnnzoo.parse_config(f"name: {out.name}\nmodel:\n  layers:\n{layers}"
                                 + SMALL[SMALL.index("data:"):])
    return fit(config, out=out, data_root=str(data), show_progress=False,
               callbacks=[]).run_dir


@pytest.mark.slow
def test_a_local_layer_that_does_not_script_reads_as_one_sentence(tmp_path, cli, work):
    run = _trained(tmp_path / "loc", work / "data",
                   "    - pool: 4\n    - local: {filters: 2, kernel: 3}\n    - fc: 10\n")
    result = cli("export", run, "-f", "torchscript", "-o", tmp_path / "m.pt")
    assert result.code == USER_ERROR and result.err.count("\n") == 1
    assert "model.layers[1] (local)" in result.err and "; try --format" in result.err
    assert ":;" not in result.err and not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_exporting_a_capsule_net_prints_no_torch_warning(tmp_path, cli, work):
    run = _trained(tmp_path / "caps", work / "data",
                   "    - conv: {filters: 8, kernel: 5, stride: 2}\n"
                   "    - primary_capsules: {capsules: 4, dim: 4, kernel: 3, stride: 2}\n"
                   "    - capsules: {units: 10, dim: 8, routing: 2}\n"
                   "    - decoder: {units: [32], weight: 0.0005}\n    - length\n")
    with warnings.catch_warnings(record=True) as caught:  # what a user's terminal shows
        warnings.simplefilter("always")
        result = cli("export", run, "-f", "exported", "-o", tmp_path / "caps.pt2")
    assert result.code == 0, result.err
    assert [str(w.message) for w in caught] == [] and result.err == ""
    assert (tmp_path / "caps.pt2").is_file()


def test_a_name_in_a_script_the_fonts_lack_draws_without_warnings(tmp_path):
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    from cnnzoo.utils import pictures

    title = "日本語ラン ünïcode"
    figure = pictures.curves_figure([{"epoch": "1", "split": "train", "loss": "1.0",
                                      "accuracy": "0.5"}], title)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pictures.save_png(figure, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] > 0
    font = FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap()
    drawn = next(t.get_text() for t in figure.texts + [a.title for a in figure.axes]
                 if t.get_text().endswith("ünïcode"))
    assert len(drawn) == len(title) and drawn.endswith(" ünïcode")
    for given, shown in zip(title, drawn, strict=True):
        assert shown == given or (shown == "?" and ord(given) not in font)
