"""`cnnzoo export`: every layer type in every format, dynamic batch sizes checked by
loading the files back here, preprocessing against the training pipeline, and the
bad inputs that must leave no file behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.data.augment import BatchTransform
from cnnzoo.data.pipeline import convert_images
from cnnzoo.errors import CnnzooError
from cnnzoo.layers.padding import PADDING_MODES
from cnnzoo.layers.registry import list_layer_types
from cnnzoo.layers.shapes import Volume
from cnnzoo.tools.export import FORMATS, LOADERS, Preprocess, direct_equivalent, write_checked
from tests.helpers.common import slow_cases
from tests.runs.test_pretrained import fake_mnist, private_cache, trained_run  # noqa: F401 (fixtures)

# One small network per case, between a 12x12x2 input and a 3-unit classifier.
CONV = "- conv: {filters: 4, kernel: 3}"
CASES: dict[str, str] = {
    "input": CONV,
    **{name: f"{CONV}\n- {name}" for name in ("relu", "gelu", "silu", "tanh", "sigmoid",
                                              "leaky_relu", "elu", "dropout", "batchnorm",
                                              "flatten", "relu6", "hardswish",
                                              "hardsigmoid")},
    **{f"conv-{mode}": f"- conv: {{filters: 4, kernel: 3, padding: 2, padding_mode: {mode}}}"
       for mode in PADDING_MODES},
    "conv-strided-dilated-groups": "- conv: {filters: 4, kernel: 3, stride: 2, dilation: 2, "
                                   "groups: 2, padding: same}",
    "conv-fft": "- conv: {filters: 4, kernel: 5, padding: 2, impl: fft}",
    "conv-fixed-kernel": "- conv: {filters: 4, kernel: 3, weights: sobel_x, padding: same}",
    **{f"local-{mode}": f"- local: {{filters: 3, kernel: 3, padding: 1, padding_mode: {mode}}}"
       for mode in PADDING_MODES},
    "residual": "- residual: {layers: [conv: {filters: 2, kernel: 3, padding: same}, relu]}",
    "residual-conv-shortcut": "- residual: {layers: [conv: {filters: 4, kernel: 3, stride: 2, "
                              "padding: same}]}",
    "repeat": "- repeat: {times: 2, layers: [conv: {filters: 2, kernel: 3, padding: same}]}",
    "branches-concat": "- branches: [[conv: {filters: 2, kernel: 1}], [], "
                       "[pool: {size: 3, stride: 1, padding: 1}, conv: {filters: 3, kernel: 3, "
                       "padding: same}]]",
    "branches-add": "- branches: {merge: add, paths: [[conv: {filters: 2, kernel: 3, "
                    "padding: same}], []]}",
    "squeeze_excite": f"{CONV}\n- squeeze_excite: 2",
    "groupnorm": f"{CONV}\n- groupnorm: 2",
    "layernorm": f"{CONV}\n- layernorm",
    "fc": "- fc: {units: 8, activation: relu}",
    "pool-max": "- pool: {kind: max, size: 3, stride: 2, padding: 1}",
    "pool-avg": "- pool: {kind: avg, size: 2}",
    "pool-ceil": "- pool: {kind: max, size: 3, stride: 2, ceil: true}",
    "global_pool-avg": f"{CONV}\n- global_pool: {{kind: avg}}",
    "global_pool-max": f"{CONV}\n- global_pool: {{kind: max}}",
    "freq_filter-matmul": "- freq_filter: {kind: bandpass, low: 0.1, high: 0.3, impl: matmul}",
    "primary_capsules": "- primary_capsules: {capsules: 2, dim: 4, kernel: 3, stride: 2}",
    "capsules": "- primary_capsules: {capsules: 2, dim: 4, kernel: 3, stride: 2}\n"
                "- capsules: {units: 3, dim: 4, routing: 2}",
    "length": "- primary_capsules: {capsules: 2, dim: 4, kernel: 3, stride: 2}\n"
              "- capsules: {units: 3, dim: 4}\n- length",
    "decoder": "- primary_capsules: {capsules: 2, dim: 4, kernel: 3, stride: 2}\n"
               "- capsules: {units: 3, dim: 4}\n- decoder: {units: [16]}",
}
# What an exporter cannot express, each with the layer its error must name.
# (impl: fft exports as the direct convolution, checked against the FFT.)
UNEXPORTABLE = {
    # TorchScript cannot record the autograd.Function that computes a local layer.
    (f"local-{mode}", "torchscript"): "model.layers[1] (local): local 3x3/1"
    for mode in PADDING_MODES
}


def network(case: str) -> cnnzoo.Network:
    body = "\n".join("    " + line for line in CASES[case].splitlines())
    text = ("model:\n  layers:\n    - input: {width: 12, height: 12, depth: 2}\n"
            f"{body}\n    - fc: 3\n")
    torch.manual_seed(0)
    model = cnnzoo.build_model(cnnzoo.parse_config(text)).eval()
    with torch.no_grad():  # batchnorm with statistics other than 0 and 1
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model


def test_every_layer_type_has_a_case():
    covered = {case.split("-")[0] for case in CASES} | {"input", "fc"}
    assert covered >= set(list_layer_types())


# Every layer through three exporters and back (the ONNX one alone takes about a second
# a network): the slow set; the fast one keeps the export tests below.
@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_layer_exports_or_is_named(tmp_path, case, fmt):
    model = network(case)
    exportable = direct_equivalent(model, say=lambda _: None)
    out = tmp_path / f"net.{fmt}"
    example = torch.randn(4, 2, 12, 12)
    if (case, fmt) in UNEXPORTABLE:
        with pytest.raises(CnnzooError) as error:
            write_checked(exportable, exportable, example, fmt, out, {}, model)
        assert UNEXPORTABLE[case, fmt] in str(error.value)
        assert f"cannot be exported as {fmt}" in str(error.value)
        assert list(tmp_path.iterdir()) == []
        return
    write_checked(exportable, exportable, example, fmt, out, {"name": case}, model)
    run = LOADERS[fmt](out)
    for batch in (7, 1):  # sizes the exporter never saw
        x = torch.randn(batch, 2, 12, 12)
        with torch.no_grad():
            assert torch.allclose(run(x), model(x), atol=1e-4, rtol=1e-4), batch
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.slow
def test_a_layer_without_an_onnx_operator_is_named(tmp_path):
    model = network("conv-fft")  # as it is, without its direct equivalent
    with pytest.raises(CnnzooError) as error:
        write_checked(model, model, torch.randn(4, 2, 12, 12), "onnx", tmp_path / "m.onnx", {})
    assert str(error.value).startswith("model.layers[1] (conv): conv 5x5/1 pad 2, 4 fft cannot "
                                       "be exported as onnx")
    assert "impl: direct computes the same" in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("data", "stored"), [
    ({"channels": 3, "pad": 2}, Volume(28, 28, 1)),
    ({"channels": 1, "resize": [20, 20]}, Volume(32, 32, 3)),
    ({"normalize": False}, Volume(28, 28, 1)),
])
def test_preprocessing_matches_the_training_pipeline(data, stored):
    from cnnzoo.config.experiment import AugmentConfig, parse_config

    config = parse_config("model:\n  layers:\n    - fc: 3\ndata: "
                         + json.dumps({"dataset": "fashion_mnist", **data}))
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, stored.depth, stored.height,
                                                    stored.width), dtype=np.uint8))
    depth = data.get("channels", stored.depth)
    size = data.get("resize", [stored.height, stored.width])
    pad = data.get("pad", 0)
    volume = Volume(size[1] + 2 * pad, size[0] + 2 * pad, depth)
    mean, std = [0.3] * depth, [0.4] * depth
    converted = convert_images(images, config.data, volume)
    expected = BatchTransform(tuple(mean), tuple(std), AugmentConfig(), config.data.normalize,
                              torch.device("cpu")).normalize(converted)
    got = Preprocess(config.data, stored, mean, std)(images)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("fmt", slow_cases(FORMATS, "onnx"))
def test_export_a_run_with_preprocessing(tmp_path, trained_run, cli, fmt):  # noqa: F811
    out = tmp_path / f"model.{fmt}"
    result = cli("export", trained_run, "--format", fmt, "--out", out, "--with-preprocessing")
    assert result.code == 0, result.err
    assert "largest difference" in result.out
    run = LOADERS[fmt](out)
    from cnnzoo.runs import rundir
    from cnnzoo.runs.load import load_run_model, run_transform

    info = rundir.open_run(trained_run)
    model = load_run_model(info, torch.device("cpu")).to(memory_format=torch.contiguous_format)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(run_transform(info, torch.device("cpu")).normalize(images))
        assert torch.allclose(run(images), expected, atol=1e-4)
    if fmt == "onnx":
        import onnx

        meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    elif fmt == "torchscript":
        files = {"cnnzoo.json": ""}
        torch.jit.load(str(out), _extra_files=files)
        meta = json.loads(files["cnnzoo.json"])
    else:
        files = {"cnnzoo.json": ""}
        torch.export.load(str(out), extra_files=files)
        meta = json.loads(files["cnnzoo.json"])
    assert meta["classes"] == info.classes and meta["mean"] == info.info["mean"]
    assert meta["preprocessing"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "tflite"], "unknown export format 'tflite'"),
    (["--format", "onnx", "--pretrained"], "has no pretrained weights"),
])
def test_bad_export_requests_leave_nothing(tmp_path, cli, monkeypatch, args, message):
    from tests.runs.test_pretrained import no_bundled_weights

    no_bundled_weights(monkeypatch, tmp_path)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    result = cli("export", "lenet5", *args, "--out", out)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert list(out.parent.iterdir()) == []


def test_export_of_a_run_without_weights_is_refused(tmp_path, trained_run, cli):  # noqa: F811
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    (run / "model.safetensors").unlink()
    result = cli("export", run, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert result.code == 2 and "has no model.safetensors" in result.err
    assert not (tmp_path / "m.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_export_out_is_a_directory(tmp_path, trained_run, cli):  # noqa: F811
    result = cli("export", trained_run, "--format", "exported", "--out", tmp_path)
    assert result.code == 2 and "is a directory" in result.err
