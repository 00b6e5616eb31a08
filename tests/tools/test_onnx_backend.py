"""`--backend onnxruntime`: the shipped networks exported on first use answer as torch
does, the export is cached by the weights' digest, and a cached file that computes
something else is refused before it answers anything."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.cli.options import USER_ERROR
from cnnzoo.tools.predict.predictor import decode, weights_digest
from tests.helpers.predicting import write_pngs

SHIPPED = ["lenet5", "fashion-best", "resnet-small"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_onnxruntime_answers_as_torch_does(name, tmp_path):
    files = write_pngs(tmp_path, 5, seed=3)
    torch_side = cnnzoo.Predictor(name, pretrained=True, top=10)
    onnx_side = cnnzoo.Predictor(name, pretrained=True, backend="onnxruntime", top=10)
    cached = onnx_side.run.path / f"model-{weights_digest(onnx_side.run)[:16]}.onnx"
    assert cached.is_file()  # next to the unpacked run, in the user cache
    for ours, theirs in zip(onnx_side.predict(files), torch_side.predict(files), strict=True):
        assert [g.index for g in ours.top][:3] == [g.index for g in theirs.top][:3]
        by_class = {g.index: g.value for g in theirs.top}
        assert max(abs(g.value - by_class[g.index]) for g in ours.top) <= 1e-5
    pixels = torch.from_numpy(np.stack([decode(f, torch_side.volume) for f in files]))
    difference = (onnx_side.scores(pixels) - torch_side.scores(pixels)).abs().max()
    assert float(difference) <= 1e-5


@pytest.mark.slow
def test_the_export_is_cached_and_a_wrong_file_is_refused(tmp_path, cli):
    files = write_pngs(tmp_path / "images", 2)
    first = cli("predict", "lenet5", "--pretrained", *files, "--json", "--backend", "onnxruntime")
    assert first.code == 0, first.err
    run = cnnzoo.Predictor("lenet5", pretrained=True).run
    cached = run.path / f"model-{weights_digest(run)[:16]}.onnx"
    stamp = cached.stat().st_mtime_ns
    again = cli("predict", "lenet5", "--pretrained", *files, "--json", "--backend", "onnxruntime")
    assert again.out == first.out and cached.stat().st_mtime_ns == stamp  # not exported again
    other = cnnzoo.Predictor("mlp", pretrained=True, backend="onnxruntime").run
    saved = tmp_path / "lenet5.onnx"
    shutil.copy(cached, saved)
    try:  # another 10-class network with the same input, where lenet5's file should be
        shutil.copy(next(other.path.glob("model-*.onnx")), cached)
        refused = cli("predict", "lenet5", "--pretrained", *files, "--backend", "onnxruntime")
        assert refused.code == USER_ERROR
        assert "does not compute what the run's network does" in refused.err
        assert "delete it and it is exported again" in refused.err
    finally:
        shutil.copy(saved, cached)
    assert json.loads(first.out)[0]["top"]


def test_onnxruntime_is_refused_on_another_device(cli, tmp_path):
    files = write_pngs(tmp_path, 1)
    result = cli("predict", "lenet5", "--pretrained", *files, "--backend", "onnxruntime",
                 "--device", "cuda")
    assert result.code == USER_ERROR and "runs on the CPU" in result.err
