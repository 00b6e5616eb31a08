"""`freq_filter` against numpy's FFT, its config errors, its cost and its ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.errors import ConfigError
from cnnzoo.layers.basic import InputSpec
from cnnzoo.layers.freq import FreqFilterSpec
from cnnzoo.layers.modules import FreqFilter
from cnnzoo.layers.registry import parse_layer
from cnnzoo.model.build import build_layer
from cnnzoo.utils.params import Where

SHAPES = ("ideal", "gaussian", "butterworth")
SIZES = [(8, 8), (7, 7), (6, 9), (11, 4), (28, 28)]
SETTINGS = [
    {"kind": "lowpass", "cutoff": 0.2},
    {"kind": "highpass", "cutoff": 0.15},
    {"kind": "bandpass", "low": 0.1, "high": 0.3},
]


def _numpy_mask(size, kind, shape, cutoff=None, low=None, high=None, order=2):
    """The issue's definition, written out again with numpy alone."""
    fy, fx = np.meshgrid(np.fft.fftfreq(size[0]), np.fft.fftfreq(size[1]), indexing="ij")
    r = np.hypot(fx, fy)

    def lowpass(c):
        if shape == "ideal":
            return (r <= c).astype(float)
        if shape == "gaussian":
            return np.exp(-(r**2) / (2 * c * c))
        return 1 / (1 + (r / c) ** (2 * order))

    if kind == "lowpass":
        return lowpass(cutoff)
    if kind == "highpass":
        return 1 - lowpass(cutoff)
    return lowpass(high) * (1 - lowpass(low))


def _layer(params: dict, size, depth=3):
    """The plan of `input -> freq_filter(params)` and the built filter layer."""
    spec = parse_layer({"freq_filter": params}, 0, Where("test", ()))
    plan = cnnzoo.plan_layers([InputSpec(width=size[1], height=size[0], depth=depth), spec])
    return plan, build_layer(plan.layers[1]).eval()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s["kind"])
@pytest.mark.parametrize("impl", ["matmul", "fft"])
def test_matches_numpy_fft(size, shape, setting, impl):
    params = {**setting, "shape": shape, "impl": impl}
    if shape == "butterworth":
        params["order"] = 3
    plan, layer = _layer(params, size)
    x = np.random.default_rng(sum(size)).normal(size=(2, 3, *size))
    mask = _numpy_mask(size, setting["kind"], shape, setting.get("cutoff"), setting.get("low"),
                       setting.get("high"), params.get("order", 2))
    expected = np.real(np.fft.ifft2(np.fft.fft2(x) * mask))
    with torch.no_grad():
        got = layer(torch.tensor(x, dtype=torch.float32)).double().numpy()
    assert got.shape == x.shape
    np.testing.assert_allclose(got, expected, atol=2e-6 * max(1.0, np.abs(x).max()))
    assert plan.layers[1].output == plan.layers[0].output


def test_masks_do_what_their_names_say():
    size = (16, 16)
    low = FreqFilterSpec(kind="lowpass", cutoff=0.2, shape="ideal").mask(size)
    high = FreqFilterSpec(kind="highpass", cutoff=0.2, shape="ideal").mask(size)
    assert low[0, 0] == 1 and high[0, 0] == 0  # the mean passes low, not high
    assert low[8, 8] == 0 and high[8, 8] == 1  # the corner (0.5, 0.5) the other way
    np.testing.assert_array_equal(low + high, np.ones(size))
    butter = FreqFilterSpec(kind="lowpass", cutoff=0.25, shape="butterworth").mask(size)
    assert butter[0, 4] == pytest.approx(0.5)  # fx = 4/16 = cutoff: half power by definition
    gauss = FreqFilterSpec(kind="lowpass", cutoff=0.25, shape="gaussian").mask(size)
    assert gauss[4, 0] == pytest.approx(math.exp(-0.5))


def test_no_parameters_and_empty_state_dict():
    _, layer = _layer({"cutoff": 0.25}, (10, 12))
    assert list(layer.parameters()) == []
    assert layer.state_dict() == {}
    assert layer.mask.shape == (10, 12)


def test_gradient_flows_through_both_impls():
    x = torch.randn(2, 1, 9, 10, dtype=torch.float64, requires_grad=True)
    mask = FreqFilterSpec(cutoff=0.2).mask((9, 10))
    for impl in ("matmul", "fft"):
        module = FreqFilter(mask, impl).double()
        assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("size", [(28, 28), (12, 7)])
def test_matmul_macs_agree_with_flop_counter(size):
    plan, layer = _layer({"cutoff": 0.25, "impl": "matmul"}, size, depth=3)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(torch.randn(1, 3, *size))
    assert plan.layers[1].macs == counter.get_total_flops() // 2 > 0
    h, w = size
    assert plan.layers[1].macs == 3 * (4 * h * w * w + 8 * h * h * w)


def test_auto_picks_fft_for_large_inputs():
    small, _ = _layer({"cutoff": 0.25}, (32, 32), depth=1)
    large, _ = _layer({"cutoff": 0.25}, (200, 150), depth=1)
    assert small.layers[1].detail["impl"] == "matmul"
    assert large.layers[1].detail["impl"] == "fft"
    n = 200 * 150
    assert large.layers[1].macs == round(2 * n * math.log2(n)) + n


def test_half_precision_input_is_computed_in_fp32():
    _, layer = _layer({"cutoff": 0.3}, (8, 8), depth=1)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        got = layer(x.to(torch.bfloat16))
        full = layer(x.to(torch.bfloat16).float())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), full, atol=1e-2, rtol=1e-2)


@pytest.mark.slow
def test_exports_to_onnx_without_complex_types(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    _, layer = _layer({"kind": "bandpass", "low": 0.1, "high": 0.35, "shape": "butterworth"},
                      (10, 12), depth=2)
    model = torch.nn.Sequential(layer, torch.nn.Flatten(), torch.nn.Linear(240, 3)).eval()
    x = torch.randn(1, 2, 10, 12)
    path = tmp_path / "freq.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"])
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert not ops & {"DFT", "STFT"}
    assert "MatMul" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


BAD = [
    ({"cutoff": 0}, "cutoff must be in (0, 0.5*sqrt(2)", "Received: cutoff=0"),
    ({"cutoff": -0.1}, "cutoff must be in", "Received: cutoff=-0.1"),
    ({"cutoff": 0.8}, "cutoff must be in", "Received: cutoff=0.8"),
    ({"cutoff": "wide"}, "cutoff must be a number", "'wide'"),
    ({"kind": "bandpass", "low": 0.3, "high": 0.2}, "low < high", "low=0.3, high=0.2"),
    ({"kind": "bandpass", "low": 0.2, "high": 0.2}, "low < high", "low=0.2, high=0.2"),
    ({"kind": "bandpass", "high": 0.2}, "needs 'low'", "bandpass"),
    ({"kind": "bandpass", "low": 0.1, "high": 0.2, "cutoff": 0.3}, "not cutoff", "low and high"),
    ({"kind": "lowpass"}, "needs 'cutoff'", "cutoff: 0.25"),
    ({"cutoff": 0.2, "low": 0.1}, "'low' belongs to kind: bandpass", "remove low"),
    ({"cutoff": 0.2, "shape": "butterworth", "order": 0}, "order must be positive",
     "Received: order=0"),
    ({"cutoff": 0.2, "order": 3}, "order applies to shape: butterworth", "gaussian"),
    ({"kind": "notch", "cutoff": 0.2}, "kind must be one of lowpass, highpass, bandpass",
     "'notch'"),
    ({"cutoff": 0.2, "shape": "gausian"}, "shape must be one of", "did you mean 'gaussian'"),
]


@pytest.mark.parametrize(("params", "what", "detail"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_parameters_are_config_errors(params, what, detail):
    with pytest.raises(ConfigError) as info:
        parse_layer({"freq_filter": params}, 3, Where("model.layers", ("model", "layers")))
    message = str(info.value)
    assert "model.layers[3] (freq_filter)" in message
    assert what in message and detail in message


def test_flat_input_is_a_config_error():
    spec = parse_layer({"freq_filter": 0.2}, 1, Where("model.layers", ()))
    with pytest.raises(ConfigError, match="flat vector"):
        cnnzoo.plan_layers([InputSpec(width=1, height=1, depth=5),
                            parse_layer("flatten", 0, Where("model.layers", ())), spec])


def test_cli_exit_code_for_a_bad_cutoff(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  layers:\n    - input: {width: 8, height: 8, depth: 1}\n"
                    "    - freq_filter: {cutoff: 0.9}\n    - fc: 2\n")
    result = cli("summary", "--config", path)
    assert result.code == 2
    assert "line 4" in result.err and "cutoff=0.9" in result.err
    assert "Traceback" not in result.err


# ---- cnnzoo filter in frequency


def test_centred_log_spectrum_matches_numpy():
    from cnnzoo.tools.filter import centred_log_spectrum

    for shape in [(6, 8), (7, 9), (5, 4)]:
        grey = np.random.default_rng(1).random(shape)
        expected = np.fft.fftshift(np.log1p(np.abs(np.fft.fft2(grey))))
        got = centred_log_spectrum(torch.tensor(grey)).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_blur_in_frequency_is_the_circular_conv():
    from cnnzoo.tools.filter import blur_in_frequency

    x = torch.rand(1, 9, 12, dtype=torch.float64)
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64) / 16
    spatial = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="circular"), k[None, None])[0]
    torch.testing.assert_close(blur_in_frequency(x), spatial)


def test_filter_cli_frequency_panels_and_theorem(tmp_path, cli):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 40), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(tmp_path / "in.png")
    out = tmp_path / "grid.png"
    result = cli("filter", tmp_path / "in.png", "--kernel", "gaussian_blur", "--lowpass", "0.2",
                 "--shape", "ideal", "--out", out)
    assert result.code == 0, result.err
    difference = float(result.out.split("differ by at most ")[1].split()[0])
    assert difference < 1e-5
    with Image.open(out) as grid:
        panels = np.asarray(grid)
        # 3 panels, a 40-wide image enlarged 3x: 120 x 90 each
        assert grid.size == (3 * 120 + 4 * 4, 16 + 90 + 2 * 4)
    lowpass = panels[20:110:3, 4 + 2 * 124:4 + 2 * 124 + 120:3].astype(float) / 255
    mask = _numpy_mask((30, 40), "lowpass", "ideal", 0.2)
    expected = np.real(np.fft.ifft2(np.fft.fft2(pixels / 255) * mask)).clip(0, 1)
    np.testing.assert_allclose(lowpass, expected, atol=0.5 / 255 + 1e-6)
    spectra = cli("filter", tmp_path / "in.png", "--highpass", "0.1", "--bandpass", "0.1",
                  "0.3", "--spectrum", "--out", out)
    assert spectra.code == 0, spectra.err
    with Image.open(out) as grid:
        assert grid.size == (4 * 120 + 5 * 4, 2 * (16 + 90) + 3 * 4)  # 3 panels + 3 spectra


def test_filter_cli_shrinks_large_images_unless_full_size(tmp_path, cli):
    from PIL import Image

    Image.fromarray(np.zeros((600, 2048), dtype=np.uint8), "L").save(tmp_path / "wide.png")
    out = tmp_path / "grid.png"
    assert cli("filter", tmp_path / "wide.png", "--lowpass", "0.1", "--out", out).code == 0
    with Image.open(out) as grid:
        assert grid.size == (2 * 1024 + 3 * 4, 16 + 300 + 2 * 4)
    assert cli("filter", tmp_path / "wide.png", "--lowpass", "0.1", "--full-size",
               "--out", out).code == 0
    with Image.open(out) as grid:
        assert grid.size == (2 * 2048 + 3 * 4, 16 + 600 + 2 * 4)


@pytest.mark.parametrize(("args", "message"), [
    (("--lowpass", "0"), "--lowpass 0: cutoff must be in (0, 0.5*sqrt(2)"),
    (("--bandpass", "0.3", "0.1"), "--bandpass 0.3 0.1: bandpass needs low < high"),
    # a choice the parser knows: refused by it, with the choices
    (("--lowpass", "0.2", "--shape", "box"),
     "'box' is not one of 'ideal', 'gaussian', 'butterworth'"),
    ((), "give at least one --kernel"),
])
def test_filter_cli_frequency_errors(tmp_path, cli, args, message):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), "L").save(tmp_path / "in.png")
    result = cli("filter", tmp_path / "in.png", *args, "--out", tmp_path / "grid.png")
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
@pytest.mark.parametrize("name", ["sobel_y", "gaussian_blur"])
def test_filter_in_bands_equals_the_whole_conv(monkeypatch, mode, name):
    from cnnzoo.tools import filter as filtering

    channel = torch.rand(1, 23, 9)
    conv = filtering.kernel_layer(channel, name, mode)
    with torch.no_grad():
        whole = conv(channel[None])[0]
        monkeypatch.setattr(filtering, "BAND_ROWS", 5)  # bands of 5, 5, 5, 5 and 3 rows
        banded = filtering.in_bands(conv, wrap=mode == "circular")(channel)
    torch.testing.assert_close(banded, whole)
