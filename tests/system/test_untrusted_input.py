"""Untrusted input gets one clear error or the right answer: run names that would
escape runs/, configs that expand to millions of layers, images of every bit depth
and with alpha, damaged run directories, bad devices and output paths, and `--set`
messages that name the `--set`."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import cnnzoo
from cnnzoo.config import limits
from cnnzoo.data.images import read_image, read_pixels
from cnnzoo.errors import CnnzooError, ConfigError
from cnnzoo.layers.shapes import Volume
from cnnzoo.model.plan import plan_experiment
from cnnzoo.runs import rundir
from cnnzoo.tools.compare import summarize_run
from cnnzoo.tools.filter import load_image
from tests.helpers.common import write
from tests.helpers.datafiles import class_images
from tests.helpers.untrusted import USER_ERROR, small_config, small_workspace

SMALL = small_config()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_workspace(tmp_path_factory.mktemp("untrusted"), train=True) / "run"


@pytest.mark.parametrize("name", ["../../../escaped", "/abs/path", "a/b", "..", ".hidden",
                                  "a\\b", " ", "tab\there", "x" * 101])
def test_a_name_that_is_not_one_safe_folder_is_refused(tmp_path, cli, name):
    result = cli("train", "-c", "lenet5", "--set", f"name={json.dumps(name)}")
    assert result.code == USER_ERROR
    assert result.err.startswith("error: --set name=") and "folder name" in result.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["lenet5-wide", "run_2.v3", "ünïcode"])
def test_a_safe_name_is_kept(name):
    assert cnnzoo.load_config("lenet5", [f"name={name}"]).name == name


def test_a_config_file_named_as_a_hidden_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="starts with a dot"):
        cnnzoo.load_config(write(tmp_path / ".secret.yaml", SMALL))


def _nested_repeats(levels: int, times: int = 100) -> str:
    stack = "[relu]"
    for _ in range(levels):
        stack = f"[{{repeat: {{times: {times}, layers: {stack}}}}}]"
    return f"model:\n  layers: {stack}\n"


@pytest.mark.parametrize("levels", [3, 4, 6])
def test_nested_repeats_past_the_layer_limit_are_refused_before_expanding(tmp_path, cli,
                                                                          levels):
    expected = sum(100 ** k for k in range(levels + 1))  # the repeats and the relus
    result = cli("summary", "-c", write(tmp_path / "bomb.yaml", _nested_repeats(levels)))
    assert result.code == USER_ERROR
    assert f"{expected:,} layers" in result.err and "10,000" in result.err


def test_the_layer_limit_is_exact_and_counts_like_the_plan(tmp_path):
    head = "    - repeat: {times: 1000, layers: [relu, relu, relu, relu, relu, relu, relu, " \
           "relu, relu]}\n"  # 1 + 9,000 layers

    def config(relus: int) -> str:
        return ("model:\n  layers:\n    - input: {width: 4, height: 4, depth: 1}\n" + head
                + "    - relu\n" * relus)

    at_limit = cnnzoo.parse_config(config(limits.MAX_LAYERS - 9002))  # and the input
    assert limits.count_layers(at_limit.model.layers) == limits.MAX_LAYERS
    with pytest.raises(ConfigError, match="10,001 layers"):
        cnnzoo.parse_config(config(limits.MAX_LAYERS - 9001))
    small = cnnzoo.parse_config(
        "model:\n  layers:\n    - input: {width: 8, height: 8, depth: 1}\n"
        "    - repeat: {times: 3, layers: [{conv: {filters: 2, kernel: 3, padding: same, "
        "activation: relu}}, {repeat: {times: 2, layers: [relu]}}]}\n    - fc: 3\n")
    plan = plan_experiment(small)
    assert limits.count_layers(small.model.layers) == len(list(plan.walk()))


def test_set_errors_name_the_set_argument_not_the_file(cli):
    result = cli("summary", "-c", "lenet5", "--set", "a.b.c=1")
    assert result.code == USER_ERROR
    assert result.err.startswith("error: --set a.b.c=1: 'a' is not a parameter")
    assert "lenet5.yaml" not in result.err


def test_negative_set_indices_count_from_the_end():
    last = len(cnnzoo.load_config("lenet5").model.layers) - 1
    by_end = cnnzoo.load_config("lenet5", ["model.layers[-1].fc.units=10",
                                           "model.layers[-2]=tanh"])
    by_index = cnnzoo.load_config("lenet5", [f"model.layers[{last}].fc.units=10",
                                             f"model.layers.{last - 1}=tanh"])
    assert by_end.model == by_index.model
    with pytest.raises(ConfigError, match="does not exist"):
        cnnzoo.load_config("lenet5", ["model.layers[-99].fc.units=5"])


# ---- images


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    grey = _save(tmp_path / "grey16.png", np.full((6, 6), 32768, np.uint16))
    white = _save(tmp_path / "white.png", np.full((6, 6), 255, np.uint8))
    assert Image.open(grey).mode.startswith("I")
    assert read_image(grey, Volume(6, 6, 1)).unique().tolist() == [128]  # 32768/65535*255
    assert read_image(white, Volume(6, 6, 1)).unique().tolist() == [255]
    assert float(load_image(grey).mean()) == pytest.approx(32768 / 65535)  # cnnzoo filter


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("I", np.full((3, 3), 13107, np.int32), 0.2),  # 16-bit PNGs open as I in some Pillows
    ("F", np.full((3, 3), 0.75, np.float32), 0.75),
    ("F", np.full((3, 3), 7.0, np.float32), 1.0),  # clipped
    ("I", np.full((3, 3), -5, np.int32), 0.0),
])
def test_every_bit_depth_is_scaled_to_the_unit_range(tmp_path, mode, values, expected):
    path = _save(tmp_path / "image.tif", values, mode)
    assert read_pixels(path) == pytest.approx(np.full((3, 3, 1), expected), abs=1e-6)


def test_alpha_is_composited_over_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    alpha = np.array([0, 51, 204, 255], np.uint8)
    rgba[..., 3] = alpha[None, :]
    pixels = read_pixels(_save(tmp_path / "red.png", rgba, "RGBA"))
    assert pixels[..., 0] == pytest.approx(np.tile(200 / 255 * alpha / 255, (4, 1)), abs=1e-6)
    assert (pixels[..., 1:] == 0).all()
    transparent = rgba.copy()
    transparent[..., 3] = 0
    path = _save(tmp_path / "clear.png", transparent, "RGBA")
    assert read_image(path, Volume(4, 4, 3)).unique().tolist() == [0]  # not "solid red"
    la = np.stack([np.full((2, 2), 255, np.uint8), np.full((2, 2), 102, np.uint8)], -1)
    assert read_pixels(_save(tmp_path / "la.png", la, "LA")) == pytest.approx(0.4, abs=1e-6)


def test_palette_images_read_through_their_palette(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P").save(path)
    assert Image.open(path).mode == "P"
    assert read_pixels(path) == pytest.approx(rgb / 255)
    grey = tmp_path / "grey-palette.png"
    Image.fromarray(np.full((2, 2), 64, np.uint8)).convert("P").save(grey)
    assert read_pixels(grey).shape == (2, 2, 1)
    clear = tmp_path / "clear-palette.png"
    Image.fromarray(rgb).convert("P").save(clear, transparency=0)  # index 0 transparent
    expected = rgb / 255
    index0 = np.asarray(Image.open(clear))[0, 1]  # whatever black got as its index
    if index0 == 0:
        expected[0, 1] = expected[1, 0] = 0
    assert read_pixels(clear) == pytest.approx(expected)


def test_predict_answers_every_good_file_and_reports_the_bad_ones(tmp_path, cli, trained):
    good = []
    for label in (3, 7):
        image = class_images(np.array([label]), 28, 1, seed=label)[0, :, :, 0]
        good.append(_save(tmp_path / f"class{label}.png", image))
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    missing = tmp_path / "missing.png"
    result = cli("predict", trained, good[0], bad, good[1], missing)
    assert result.code == USER_ERROR
    lines = result.out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(good[0]), str(good[1])]
    assert result.err.startswith(f"error: cannot read image {bad}: ")
    assert "(2 of 4 images could not be read; the others are answered)" in result.err
    assert str(bad) in result.err and str(missing) in result.err
    assert "Traceback" not in result.err
    as_json = cli("predict", trained, good[0], bad, "--json")
    items = json.loads(as_json.out)
    assert as_json.code == USER_ERROR and "top" in items[0] and "error" in items[1]
    alone = cli("predict", trained, good[0], good[1], "--json")
    assert alone.code == 0
    first = json.loads(alone.out)[0]["top"]  # the same answer as in the mixed batch
    assert [g["class"] for g in first] == [g["class"] for g in items[0]["top"]]
    assert [g["probability"] for g in first] == pytest.approx(
        [g["probability"] for g in items[0]["top"]], abs=1e-6)


def test_predict_tells_a_16_bit_mid_grey_from_white(tmp_path, cli, trained):
    grey = _save(tmp_path / "grey16.png", np.full((28, 28), 32768, np.uint16))
    white = _save(tmp_path / "white.png", np.full((28, 28), 255, np.uint8))
    mid = _save(tmp_path / "grey8.png", np.full((28, 28), 128, np.uint8))
    result = json.loads(cli("predict", trained, grey, white, mid, "--json", "--top", "10").out)
    as_dict = [{g["class"]: g["probability"] for g in item["top"]} for item in result]
    assert as_dict[0] != as_dict[1]
    assert as_dict[0] == pytest.approx(as_dict[2])


@pytest.mark.parametrize("command", ["eval", "predict", "viz"])
def test_a_bad_device_is_a_user_error(cli, trained, tmp_path, command):
    image = _save(tmp_path / "x.png", np.zeros((28, 28), np.uint8))
    args = {"eval": [], "predict": [image], "viz": ["--image", image]}[command]
    result = cli(command, trained, *args, "--device", "foo")
    assert result.code == USER_ERROR
    assert "--device must be auto, cpu, cuda, cuda:N or mps" in result.err


def test_viz_out_an_existing_file_that_is_not_a_png_is_refused(cli, trained, tmp_path):
    image = _save(tmp_path / "x.png", np.zeros((28, 28), np.uint8))
    (tmp_path / "notes").write_text("keep me")
    result = cli("viz", trained, "--image", image, "--out", tmp_path / "notes")
    assert result.code == USER_ERROR and "not a .png" in result.err
    assert (tmp_path / "notes").read_text() == "keep me"


# ---- damaged run directories


def _copy_run(trained: Path, tmp_path: Path, name: str = "run") -> Path:
    copy = tmp_path / name
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns(runlock_name()))
    return copy


def runlock_name() -> str:
    from cnnzoo.runs.lock import LOCK

    return LOCK


@pytest.mark.parametrize(("info", "message"), [
    ({"classes": 5}, "'classes' must be a list"),
    ("five", "expected a JSON object"),
    ("classes5", "10 outputs"),
    ("input", "'input' must be"),
    ("mean", "'mean' must be 1 numbers"),
])
def test_predict_with_a_damaged_run_json_is_one_clear_error(tmp_path, cli, trained, info,
                                                            message):
    run = _copy_run(trained, tmp_path)
    good = json.loads((trained / rundir.RUN).read_text())
    edits = {"classes5": {**good, "classes": good["classes"][:5]},
             "input": {**good, "input": [28, 28]}, "mean": {**good, "mean": ["x"]}}
    damaged = edits[info] if isinstance(info, str) and info in edits else info
    (run / rundir.RUN).write_text(json.dumps(damaged))
    image = _save(tmp_path / "x.png", np.zeros((28, 28), np.uint8))
    result = cli("predict", run, image)
    assert result.code == USER_ERROR and message in result.err, result.err
    assert "Traceback" not in result.err


def test_compare_skips_a_damaged_run_and_compares_the_rest(tmp_path, cli, trained):
    good = _copy_run(trained, tmp_path, "good")
    for name, text in (("empty", "[]"), ("params", '{"params": "x"}')):
        (_copy_run(trained, tmp_path, name) / rundir.RESULTS).write_text(text)
    result = cli("compare", good, tmp_path / "empty", tmp_path / "params", "--no-plot")
    assert result.code == 0, result.err
    assert str(good) in result.out and str(tmp_path / "empty") not in result.out
    assert f"warning: skipped {tmp_path / 'empty'}" in result.err
    assert f"warning: skipped {tmp_path / 'params'}" in result.err
    alone = cli("compare", tmp_path / "empty", "--no-plot")
    assert alone.code == USER_ERROR and "expected a JSON object" in alone.err


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
RUN_KEYS = st.fixed_dictionaries({}, optional={
    "classes": JSON | st.lists(st.text(max_size=4), max_size=12),
    "input": JSON | st.lists(st.integers(-2, 40), min_size=3, max_size=3),
    "mean": JSON | st.lists(st.floats(), min_size=1, max_size=1),
    "std": JSON | st.lists(st.floats(), min_size=1, max_size=1),
})
RESULT_KEYS = st.fixed_dictionaries({}, optional={
    key: JSON for key in (*rundir.RESULT_NUMBERS, "epochs", "name", "device")})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(info=JSON | RUN_KEYS, results=JSON | RESULT_KEYS,
       raw=st.binary(max_size=40) | st.none(), config=st.binary(max_size=60) | st.none(),
       metrics=st.binary(max_size=60) | st.none())
def test_reading_a_run_with_damaged_files_gives_a_result_or_one_clear_error(
    tmp_path_factory, trained, info, results, raw, config, metrics
):
    run = _copy_run(trained, tmp_path_factory.mktemp("damaged"))
    (run / rundir.RUN).write_text(json.dumps(info))
    if raw is None:
        (run / rundir.RESULTS).write_text(json.dumps(results))
    else:
        (run / rundir.RESULTS).write_bytes(raw)
    if config is not None:
        (run / rundir.CONFIG).write_bytes(config)
    if metrics is not None:
        (run / rundir.METRICS).write_bytes(metrics)
        log = rundir.CsvLog(run / rundir.METRICS, rundir.METRIC_FIELDS)  # what --resume reads
        lines = io.BytesIO(metrics).readlines()
        assert log.rows == max(0, len(lines) - 1)
        log.truncate(1)
        assert (run / rundir.METRICS).read_bytes() == b"".join(lines[:2])
    try:
        rows = rundir.read_metrics(run)
        assert all(isinstance(r, dict) for r in rows)
    except CnnzooError as exc:
        assert "damaged" in str(exc)
    try:
        opened = rundir.open_run(run)
        summary = summarize_run(run)
        rundir.check_fits_network(opened, 10, [28, 28, 1])
    except CnnzooError as exc:
        assert str(exc)
        return
    assert opened.classes == info["classes"] and len(opened.classes) == 10
    assert isinstance(summary.params, int) and isinstance(summary.test_accuracy, float)
    assert torch.tensor(opened.info["std"]).ne(0).all()


def test_a_run_command_and_resume_hint_are_shell_quoted(monkeypatch, tmp_path):
    import shlex

    from cnnzoo.training.stopping import Interrupted

    argv = ["cnnzoo", "train", "-c", "my config.yaml", "--set", "name=a b"]
    monkeypatch.setattr("sys.argv", argv)
    assert shlex.split(rundir.command_line()) == argv
    out = tmp_path / "my runs" / "it's here"
    hint = str(Interrupted(2, out, 0, 3, data_root="/data dir")).split("Resume with: ")[1]
    assert shlex.split(hint) == ["cnnzoo", "train", "--resume", str(out), "--data-root",
                                 "/data dir"]
    assert os.sep in hint
