"""The GPU path, where a CUDA GPU is present (skipped elsewhere): data held on the
GPU, bf16 autocast and channels_last by default, losses read without stalling the
GPU, resume, torch.compile, and the convolution family's layers agreeing with
their CPU results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.data import pipeline
from cnnzoo.runs.checkpoint import load_weights
from cnnzoo.tools.evaluate import evaluate_run
from cnnzoo.training.stopping import Diverged, Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NET = """
model:
  layers:
    - conv: {filters: 8, kernel: 3, padding: same, bias: false}
    - batchnorm
    - relu
    - pool: 2
    - conv: {filters: 16, kernel: 3, padding: same, activation: relu}
    - pool: 2
    - fc: 10
data:
  dataset: fashion_mnist
  val_split: 0.1
  augment: {crop: 2, flip: true, erase: 0.5}
train:
  epochs: 3
  batch_size: 50
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  scheduler: {name: cosine}
  device: cuda
"""
STEPS_PER_EPOCH = 10  # 500 training images after the 10% held out, batches of 50


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=556, n_test=200)  # 10% held out: 500 / 56
    return root


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("config") / "net.yaml", NET)


def train(config: cnnzoo.ExperimentConfig, data_root: Path, **kwargs) -> Path:
    return fit(config, data_root=str(data_root), show_progress=False, callbacks=[],
               **kwargs).run_dir


def steps(run: Path) -> list[dict[str, str]]:
    with open(run / "steps.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_on_cuda_keeps_the_data_on_the_gpu_in_bf16_and_channels_last(
        tmp_path, config_file, data_root, monkeypatch):
    moved = []
    original = pipeline.Split.to

    def to(self, device):
        moved.append(torch.device(device).type)
        return original(self, device)

    monkeypatch.setattr(pipeline.Split, "to", to)
    run = train(cnnzoo.load_config(config_file), data_root, out=tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    assert results["device"].startswith("cuda (")
    assert results["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert results["channels_last"] is True
    assert moved and set(moved) == {"cuda"}
    # Every step's loss reached the log, though read a step late, and in order.
    rows = steps(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    # The weights are the same network on the CPU: fp32 there, bf16 autocast here.
    on_gpu, _ = evaluate_run(run, data_root=str(data_root), device="cuda")
    on_cpu, _ = evaluate_run(run, data_root=str(data_root), device="cpu")
    assert on_gpu.accuracy > 0.5
    assert abs(on_gpu.accuracy - on_cpu.accuracy) <= 0.02  # bf16 rounding flips a few


def test_an_interrupted_cuda_run_resumes_at_its_step(tmp_path, config_file, data_root):
    config = cnnzoo.load_config(config_file)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config, data_root, out=out, stop_after_steps=STEPS_PER_EPOCH + 3)
    assert len(steps(out)) == STEPS_PER_EPOCH + 3
    fit(config, resume=out, data_root=str(data_root), show_progress=False, callbacks=[])
    assert [int(r["step"]) for r in steps(out)] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    assert json.loads((out / "results.json").read_text())["steps"] == 3 * STEPS_PER_EPOCH


def test_a_diverging_cuda_run_stops_without_saving_nan_weights(tmp_path, config_file,
                                                                data_root):
    config = cnnzoo.load_config(config_file, ["train.optimizer.lr=1.0e8"])
    out = tmp_path / "run"
    with pytest.raises(Diverged) as diverged:
        train(config, data_root, out=out)
    assert "the learning rate is likely too high" in str(diverged.value)
    if (out / "model.safetensors").exists():
        weights, _ = load_weights(out / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_compiled_training_on_cuda(tmp_path, config_file, data_root):
    config = cnnzoo.load_config(config_file, ["train.compile=true", "train.epochs=1"])
    run = train(config, data_root, out=tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == STEPS_PER_EPOCH and results["test_accuracy"] > 0.2


def _layer(text: str, size: int = 24, depth: int = 3) -> torch.nn.Module:
    config = cnnzoo.load_config(
        f"model:\n  layers:\n    - input: {{width: {size}, height: {size}, depth: {depth}}}\n"
        f"    - {text}\n")
    return cnnzoo.build_model(config)


@pytest.mark.parametrize("layer", [
    "conv: {filters: 6, kernel: 9, padding: same, padding_mode: symmetric, impl: fft}",
    "conv: {filters: 6, kernel: 5, stride: 2, dilation: 2, groups: 3, impl: fft}",
    "local: {filters: 6, kernel: 3, stride: 2, padding: 1, padding_mode: reflect}",
    "conv: {filters: 3, kernel: 3, padding: same, padding_mode: reflect, weights: sobel_x}",
])
def test_the_convolution_family_agrees_between_cpu_and_cuda(layer):
    torch.manual_seed(0)
    cpu = _layer(layer).double()
    gpu = _layer(layer).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    outputs, grads = [], []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        xi = x.to(device, copy=True).requires_grad_(True)  # a leaf on each device
        y = model(xi)
        (y * y).sum().backward()
        outputs.append(y.cpu())
        grads.append(xi.grad.cpu())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-9)
