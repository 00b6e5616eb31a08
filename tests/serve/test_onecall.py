"""The server's torch network as one call: traced and frozen where it computes what the
module does, the eager module kept (and the reason said) where it cannot be traced or
would compute something else."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.serve.onecall import ONE_CALL, one_call
from cnnzoo.tools.predict.predictor import Predictor


def _pixels(predictor: Predictor, size: int) -> torch.Tensor:
    volume = predictor.volume
    generator = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (size, volume.depth, volume.height, volume.width),
                         generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("name", ["lenet5", "capsnet-small", "sobel-frontend"])
def test_a_traceable_network_runs_as_one_call_with_the_modules_answers(name):
    eager = Predictor(name, pretrained=True, device="cpu")
    served = Predictor(name, pretrained=True, device="cpu")
    assert one_call(served) == ONE_CALL == served.runs_as
    assert isinstance(served.network, torch.jit.ScriptModule)
    assert served.metadata["runs_as"] == ONE_CALL and eager.metadata["runs_as"] == "torch"
    for size in (1, 5, 33):
        pixels = _pixels(eager, size)
        torch.testing.assert_close(served.scores(pixels), eager.scores(pixels),
                                   rtol=1e-5, atol=1e-6)


def test_a_network_tracing_cannot_take_stays_eager_and_says_why():
    # large-kernel-fft's FFT convolution: freezing its trace fails (a shape of size 0)
    predictor = Predictor("large-kernel-fft", pretrained=True, device="cpu")
    module = predictor.network
    runs_as = one_call(predictor)
    assert runs_as.startswith("eager (tracing failed: ") and predictor.network is module


def test_a_trace_that_computes_otherwise_is_refused(monkeypatch):
    predictor = Predictor("lenet5", pretrained=True, device="cpu")
    module = predictor.network
    # a trace that is right for its own batch size only, as one of data-dependent code
    monkeypatch.setattr(torch.jit, "freeze", lambda traced: (
        lambda x: module(x) + (x.shape[0] != 4) * 1.0))
    assert one_call(predictor).startswith("eager (the traced network differs by 1 ")
    assert predictor.network is module


def test_onnxruntime_is_left_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    predictor = Predictor("lenet5", pretrained=True, backend="onnxruntime")
    network = predictor.network
    assert one_call(predictor) == "onnxruntime" and predictor.network is network
