"""train.ema: the moving average of the weights, against a hand-written running
average, and what a run does with it (tests, saves, resumes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.runs.checkpoint import load_state, load_weights
from cnnzoo.training.ema import WeightAverage
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import TINY_BN_RUN, write
from tests.helpers.datafiles import write_mnist

TINY = TINY_BN_RUN + '  ema: {decay: 0.9}\n'


def test_average_follows_the_running_average_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    decay = 0.8
    average = WeightAverage(net, decay, warmup=True)
    expected = {k: v.clone().double() for k, v in net.state_dict().items()}
    for step in range(1, 8):
        loss = net(torch.randn(5, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        average.update(step)
        d = min(decay, (1 + step) / (10 + step))  # timm's warm-up of the decay
        for key, value in net.state_dict().items():
            if value.is_floating_point():
                expected[key] = d * expected[key] + (1 - d) * value.double()
            else:
                expected[key] = value.clone()
    got = average.module.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[key].double(), value, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(got[key], value)  # batchnorm's step counter is copied
    assert got["1.num_batches_tracked"].item() == 7
    # the average lags the weights: it is not a copy of them
    assert not torch.allclose(got["0.weight"], net.state_dict()["0.weight"])


def test_without_warmup_the_decay_is_constant():
    average = WeightAverage(nn.Linear(2, 2), 0.99, warmup=False)
    assert [average.decay_at(s) for s in (1, 10, 10_000)] == [0.99, 0.99, 0.99]
    warm = WeightAverage(nn.Linear(2, 2), 0.99, warmup=True)
    assert warm.decay_at(1) == pytest.approx(2 / 11) and warm.decay_at(10_000) == 0.99


@pytest.mark.parametrize("value", ["1.0", "-0.1", "high"])
def test_decay_outside_zero_to_one_is_a_config_error(tmp_path, cli, value):
    config = write(tmp_path / "tiny.yaml", TINY)
    result = cli("summary", "--config", config, "--set", f"train.ema.decay={value}")
    assert result.code == 2
    assert "train.ema.decay" in result.err and "Traceback" not in result.err


@pytest.fixture(scope="module")
def ema_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A straight run with train.ema, and the same run interrupted mid-epoch and resumed."""
    work = tmp_path_factory.mktemp("ema")
    write_mnist(work / "data", n_train=240, n_test=40)
    config = cnnzoo.load_config(write(work / "tiny.yaml", TINY))
    data = str(work / "data")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = fit(config, out=work / "straight", data_root=data, show_progress=False,
                       callbacks=[]).run_dir
        with pytest.raises(Interrupted):
            fit(config, out=work / "resumed", data_root=data, show_progress=False,
                callbacks=[], stop_after_steps=13)
        resumed = fit(config, resume=work / "resumed", data_root=data, show_progress=False,
                      callbacks=[]).run_dir
    finally:
        torch.set_num_threads(before)
    return straight, resumed, work / "data"


def test_a_run_saves_and_tests_the_average(ema_runs, cli):
    straight, _, data = ema_runs
    weights, _ = load_weights(straight / "model.safetensors")
    state = load_state(straight / "state.pt")
    for key, value in state["ema"].items():
        assert torch.equal(weights[key], value)  # the file holds the average ...
    assert not torch.equal(weights["layers.1.weight"], state["model"]["layers.1.weight"])
    # ... and eval of the run, which loads that file, gives the accuracy the run tested
    result = cli("eval", straight, "--data-root", data, "--json")
    assert result.code == 0, result.err
    recorded = json.loads((straight / "results.json").read_text())
    assert json.loads(result.out)["accuracy"] == recorded["test_accuracy"]


def test_interrupted_and_resumed_with_ema_equals_straight(ema_runs):
    straight, resumed, _ = ema_runs
    a, _ = load_weights(straight / "model.safetensors")
    b, _ = load_weights(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw = [load_state(r / "state.pt")["model"] for r in (straight, resumed)]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])
    results = [json.loads((r / "results.json").read_text()) for r in (straight, resumed)]
    assert results[0]["test_loss"] == results[1]["test_loss"]
