"""`cnnzoo filter`: a grid of an image through fixed kernels, checked against the conv
layer it runs through, and its errors: one line, exit code 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.common import run_process
from tests.helpers.layers import (
    layer_of,
    one_thread,  # noqa: F401 (an autouse fixture)
)


def _png(path, width: int, height: int, mode: str = "RGB", seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return pixels


def test_filter_writes_one_png_grid_through_the_conv_layer(tmp_path, cli):
    pixels = _png(tmp_path / "in.png", 120, 80)
    out = tmp_path / "grid.png"
    result = cli("filter", tmp_path / "in.png", "--kernel", "sobel_x", "--kernel", "identity",
                 "--kernel", "gaussian_blur", "--out", out)
    assert result.code == 0, result.err
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.mode == "RGB"
        # 4 panels in a row: 4 pixels around each, a 16-pixel label strip above
        assert grid.size == (4 * 120 + 5 * 4, 16 + 80 + 2 * 4)
        panels = np.asarray(grid)
    original = panels[20:100, 4:124]
    identity = panels[20:100, 4 + 2 * 124:4 + 2 * 124 + 120]
    np.testing.assert_array_equal(original, pixels)
    np.testing.assert_array_equal(identity, pixels)
    sobel = panels[20:100, 128:248].astype(float) / 255
    conv = layer_of(120, 80, 3, "conv: {filters: 3, weights: sobel_x, padding: same, "
                                "padding_mode: reflect}")
    with torch.no_grad():
        raw = conv(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0]
    # zero-sum kernels are shown around mid-grey: 0.5 + value / (2 * 4), 4 the largest response
    expected = (0.5 + raw / 8).clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(sobel, expected, atol=0.5 / 255 + 1e-6)


def test_filter_grid_of_a_small_grayscale_image_wraps_and_enlarges(tmp_path, cli):
    _png(tmp_path / "grey.png", 40, 30, mode="L")
    out = tmp_path / "grid.png"
    kernels = ["box_blur", "sharpen", "edge", "sobel_y", "emboss"]
    args = [a for k in kernels for a in ("--kernel", k)]
    result = cli("filter", tmp_path / "grey.png", *args, "--padding-mode", "symmetric",
                 "--impl", "fft", "--out", out)
    assert result.code == 0, result.err
    with Image.open(out) as grid:
        # 6 panels, 4 per row; a 40-pixel-wide image is enlarged 3x (panels >= 96 wide)
        assert grid.mode == "L"
        assert grid.size == (4 * 120 + 5 * 4, 2 * (16 + 90) + 3 * 4)


def test_filter_errors_are_one_line_and_exit_2(tmp_path, cli):
    _png(tmp_path / "in.png", 20, 20)
    out = tmp_path / "grid.png"
    missing = cli("filter", tmp_path / "nope.png", "--kernel", "sobel_x", "--out", out)
    assert missing.code == 2
    assert missing.err.strip() == f"error: cannot read image {tmp_path / 'nope.png'}: no such file"
    (tmp_path / "notes.txt").write_text("not an image")
    garbage = cli("filter", tmp_path / "notes.txt", "--kernel", "edge", "--out", out)
    assert garbage.code == 2 and "cannot read image" in garbage.err
    unknown = cli("filter", tmp_path / "in.png", "--kernel", "sobelx", "--out", out)
    assert unknown.code == 2  # refused by the parser, which lists the kernels
    assert "Invalid value for '--kernel'" in unknown.err and "'sobelx'" in unknown.err
    assert "gaussian_blur" in unknown.err
    nowhere = cli("filter", tmp_path / "in.png", "--kernel", "edge", "--out",
                  tmp_path / "no" / "grid.png")
    assert nowhere.code == 2 and "does not exist" in nowhere.err
    mode = cli("filter", tmp_path / "in.png", "--kernel", "edge", "--padding-mode", "mirror",
               "--out", out)
    assert mode.code == 2 and "Invalid value for '--padding-mode'" in mode.err
    for result in (missing, garbage, unknown, nowhere, mode):
        assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "notes.txt"]  # nothing written


@pytest.mark.slow
def test_filter_bad_image_exits_2_as_a_process(tmp_path):
    result = run_process("filter", tmp_path / "nope.png", "--kernel", "edge", "--out",
                         tmp_path / "grid.png")
    assert result.code == 2
    assert result.err.strip() == f"error: cannot read image {tmp_path / 'nope.png'}: no such file"
