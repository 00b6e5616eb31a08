"""train.optimizer muon: the Newton-Schulz iteration and one update against a hand-written
float64 version, which parameters go to the fallback and that its updates are
torch.optim.SGD's and AdamW's, a run through the CLI, and an exact resume."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.runs.checkpoint import load_state, load_weights
from cnnzoo.training.muon import Muon, orthogonalise
from cnnzoo.training.optim import create_optimizer
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

NET = """
model:
  layers:
    - input: {{width: 8, height: 8, depth: 2}}
    - conv: {{filters: 4, kernel: 3, padding: same}}
    - batchnorm
    - relu
    - conv: {{filters: 6, kernel: 3, bias: false}}
    - relu
    - fc: 16
    - relu
    - fc: 3
train:
  optimizer: {{name: muon, lr: 0.05, momentum: 0.8, nesterov: true, weight_decay: 0.01,
              {extra}}}
"""

TINY = """
model:
  layers:
    - input: {width: 28, height: 28, depth: 1}
    - conv: {filters: 8, kernel: 3, padding: same}
    - batchnorm
    - relu
    - pool: 2
    - conv: {filters: 8, kernel: 3, padding: same}
    - relu
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1, augment: {flip: true}}
train:
  epochs: 3
  batch_size: 24
  optimizer: {name: muon, lr: 0.05, momentum: 0.8, nesterov: true, fallback_lr: 0.02}
"""


def newton_schulz_float64(matrix: torch.Tensor) -> torch.Tensor:
    """The quintic iteration written out again, in float64: five steps of
    X <- 3.4445 X + (-4.7750 A + 2.0315 A^2) X, A = X X^T, on the Frobenius-normalised
    matrix, wide side along the rows."""
    x = matrix.double() / matrix.double().norm()
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.t()
    for _ in range(5):
        a = x @ x.t()
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x if wide else x.t()


SHAPES = [(4, 6), (6, 4), (8, 3, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_matches_float64_and_its_singular_values_are_near_one(shape):
    torch.manual_seed(1)
    rows = shape[0]  # rows scaled 1 .. 0.03: singular values 15 to 35 times apart
    grad = torch.randn(shape).reshape(rows, -1) * torch.logspace(0, -1.5, rows)[:, None]
    got = orthogonalise(grad)
    torch.testing.assert_close(got.double(), newton_schulz_float64(grad), rtol=0, atol=2e-5)
    # five steps of the quintic bring them all into a band around 1 (here 0.68 to 1.14)
    values = torch.linalg.svdvals(got.double())
    assert values.min() > 0.65 and values.max() < 1.15, values
    spread = torch.linalg.svdvals(grad.double())
    assert spread.max() / spread.min() > 10 * values.max() / values.min()


def test_two_muon_steps_match_the_hand_written_update():
    """Nesterov momentum, decoupled weight decay, the iteration, max(1, rows/cols)**0.5."""
    torch.manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    lr, momentum, decay = 0.1, 0.9, 0.01
    optimizer = Muon([{"params": params, "kind": "muon", "lr": lr, "momentum": momentum,
                       "nesterov": True, "weight_decay": decay}])
    expected = [p.detach().double().clone() for p in params]
    buffers = [torch.zeros_like(w) for w in expected]
    for _ in range(2):
        grads = [torch.randn(p.shape) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        for i, g in enumerate(grads):
            buffers[i] = momentum * buffers[i] + g.double()
            direction = g.double() + momentum * buffers[i]
            rows = direction.shape[0]
            cols = direction.numel() // rows
            step = newton_schulz_float64(direction.reshape(rows, cols)).reshape(g.shape)
            expected[i] = expected[i] * (1 - lr * decay) - lr * max(1, rows / cols) ** 0.5 * step
    for p, want in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach().double(), want, rtol=0, atol=1e-5)


def network_and_optimizer(tmp_path: Path, extra: str = "") -> tuple[torch.nn.Module, Muon]:
    config = cnnzoo.load_config(write(tmp_path / "net.yaml", NET.format(extra=extra)))
    model = cnnzoo.build_model(config)
    optimizer = create_optimizer(model, config.train)
    assert isinstance(optimizer, Muon)
    return model, optimizer


def test_conv_and_hidden_fc_weights_go_to_muon_the_rest_to_the_fallback(tmp_path):
    model, optimizer = network_and_optimizer(tmp_path)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["kind"]: sorted(names[id(p)] for p in g["params"])
              for g in optimizer.param_groups}
    assert groups == {
        "muon": ["layers.1.weight", "layers.4.weight", "layers.6.weight"],
        # biases, batchnorm's scale and shift, and the classifier (the last fc)
        "sgd": ["layers.1.bias", "layers.2.bias", "layers.2.weight", "layers.6.bias",
                "layers.8.bias", "layers.8.weight"],
    }
    assert optimizer.param_groups[0]["kind"] == "muon"  # the learning rate the run logs
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.05]


@pytest.mark.parametrize("fallback", ["sgd", "adamw"])
def test_the_fallback_steps_as_torch_optim_does(tmp_path, fallback):
    model, optimizer = network_and_optimizer(
        tmp_path, f"fallback: {fallback}, fallback_lr: 0.03, fallback_momentum: 0.85,"
                  " beta2: 0.99")
    twin = copy.deepcopy(model)
    ids = [id(p) for p in optimizer.param_groups[1]["params"]]
    index = {id(p): i for i, p in enumerate(model.parameters())}
    mine = [p for p in model.parameters() if id(p) in ids]
    theirs = [p for i, p in enumerate(twin.parameters()) if i in {index[k] for k in ids}]
    if fallback == "sgd":
        reference = torch.optim.SGD(theirs, lr=0.03, momentum=0.85, nesterov=True,
                                    weight_decay=0.01, foreach=False)
    else:
        reference = torch.optim.AdamW(theirs, lr=0.03, betas=(0.85, 0.99), weight_decay=0.01,
                                      foreach=False)
    torch.manual_seed(3)
    for _ in range(3):
        for p, q in zip(mine, theirs, strict=True):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for p, q in zip(mine, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("optimizer", "setting", "message"), [
    ("muon", "fallback=adam", "fallback must be one of sgd, adamw. Received: fallback='adam'"),
    ("adam", "fallback_lr=0.1", "fallback_lr only applies to muon, but the optimizer is adam"),
    ("adam", "nesterov=true", "nesterov needs sgd or muon with momentum > 0"),
])
def test_bad_muon_settings_are_one_line_config_errors(tmp_path, cli, optimizer, setting,
                                                       message):
    text = TINY if optimizer == "muon" else TINY.replace(
        "{name: muon, lr: 0.05, momentum: 0.8, nesterov: true, fallback_lr: 0.02}",
        "{name: adam, lr: 0.01}")
    result = cli("summary", "--config", write(tmp_path / "t.yaml", text),
                 "--set", f"train.optimizer.{setting}")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"train.optimizer: {message}" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err


def test_fallback_error_names_the_file_line_and_fix(tmp_path, cli):
    config = write(tmp_path / "t.yaml", TINY.replace("fallback_lr: 0.02", "fallback: adagrad"))
    result = cli("summary", "--config", config)
    assert result.code == 2 and "Traceback" not in result.err
    line = TINY.splitlines().index(
        "  optimizer: {name: muon, lr: 0.05, momentum: 0.8, nesterov: true, fallback_lr: 0.02}")
    assert f"t.yaml: train.optimizer at line {line + 1}: fallback must be one of" in result.err
    assert result.err.strip().endswith("; set fallback: sgd or adamw")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("muon") / "data"
    write_mnist(root, n_train=240, n_test=40)
    return root


def test_muon_trains_through_the_cli(tmp_path, cli, data):
    out = tmp_path / "run"
    result = cli("train", "--config", write(tmp_path / "t.yaml", TINY), "--data-root", data,
                 "--out", out)
    assert result.code == 0, result.err
    rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["split"] == "train"]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0], losses
    state = load_state(out / "state.pt")["optimizer"]
    assert [g["kind"] for g in state["param_groups"]] == ["muon", "sgd"]


@pytest.mark.parametrize("fallback", ["sgd", "adamw"])
def test_a_resumed_muon_run_is_bitwise_the_straight_run(tmp_path, data, fallback):
    config = cnnzoo.load_config(write(tmp_path / "t.yaml", TINY),
                                [f"train.optimizer.fallback={fallback}", "train.epochs=2"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(config, out=tmp_path / "straight", data_root=str(data), show_progress=False,
            callbacks=[])
        with pytest.raises(Interrupted):  # 9 steps an epoch: the end of the first
            fit(config, out=tmp_path / "parted", data_root=str(data), show_progress=False,
                callbacks=[], stop_after_steps=9)
        fit(config, resume=tmp_path / "parted", data_root=str(data), show_progress=False,
            callbacks=[])
    finally:
        torch.set_num_threads(before)
    a, _ = load_weights(tmp_path / "straight" / "model.safetensors")
    b, _ = load_weights(tmp_path / "parted" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [(tmp_path / r / "steps.csv").read_text() for r in ("straight", "parted")]
    assert steps[0] == steps[1]
