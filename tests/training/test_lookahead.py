"""train.lookahead: the slow weights against the formula on a toy model, the options'
errors, and runs with it (with EMA, Muon and a time budget) resumed bitwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.config.experiment import LookaheadConfig
from cnnzoo.runs.checkpoint import load_state, load_weights
from cnnzoo.training.lookahead import Lookahead, create_lookahead
from cnnzoo.training.step import TrainStep
from cnnzoo.training.stopping import Interrupted
from cnnzoo.training.trainer import fit
from tests.helpers.common import TINY_BN_RUN, write
from tests.helpers.datafiles import write_mnist

TINY = TINY_BN_RUN + '  lookahead: {steps: 5, alpha: 0.5}\n'


def toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def sgd_steps(net: nn.Module, n: int) -> Iterator[int]:
    """n steps of plain SGD on fixed batches; yields each global step after its update."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for step in range(1, n + 1):
        loss = net(torch.randn(5, 3, generator=generator)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield step


def test_every_k_steps_the_weights_become_slow_plus_alpha_times_fast_minus_slow():
    k, alpha = 3, 0.4
    net, twin = toy(), toy()
    lookahead = Lookahead(net, k, alpha)
    slow = {key: v.double().clone() for key, v in twin.state_dict().items()
            if v.is_floating_point()}
    for step, _ in zip(sgd_steps(net, 8), sgd_steps(twin, 8), strict=True):
        lookahead.update(step)
        if step % k == 0:  # the formula, by hand, on the twin that has no lookahead
            with torch.no_grad():
                for key, value in twin.state_dict().items():
                    if key in slow:
                        slow[key] = slow[key] + alpha * (value.double() - slow[key])
                        value.copy_(slow[key])
        got, want = net.state_dict(), twin.state_dict()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7)
        if step % k == 0:  # the weights are the slow weights, running statistics too
            assert torch.equal(got["1.running_mean"], lookahead.state_dict()["1.running_mean"])
    # after step 8 (two steps past the sync at 6) the weights are ahead of the slow ones
    assert not torch.equal(net.state_dict()["0.weight"], lookahead.state_dict()["0.weight"])
    assert net.state_dict()["1.num_batches_tracked"].item() == 8  # integer state untouched
    assert "1.num_batches_tracked" not in lookahead.state_dict()


def test_alpha_one_leaves_the_run_as_it_was():
    net, twin = toy(), toy()
    lookahead = Lookahead(net, 2, 1.0)
    for step, _ in zip(sgd_steps(net, 5), sgd_steps(twin, 5), strict=True):
        lookahead.update(step)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 twin.state_dict().values(), strict=True))


def test_slow_weights_reload_and_refuse_another_network():
    net = toy()
    lookahead = Lookahead(net, 2, 0.5)
    list(sgd_steps(net, 3))
    lookahead.update(2)
    saved = {k: v.clone() for k, v in lookahead.state_dict().items()}
    other = create_lookahead(toy(), LookaheadConfig(steps=2, alpha=0.5))
    assert other is not None and create_lookahead(net, LookaheadConfig()) is None
    other.load_state_dict(saved)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(ValueError, match="do not match"):
        Lookahead(nn.Linear(3, 2), 2, 0.5).load_state_dict(saved)


@pytest.mark.parametrize(("setting", "message", "fix"), [
    ("steps=0", "steps must be positive. Received: steps=0", "set steps: 1 or more, e.g. 5"),
    ("alpha=0", "alpha must be in (0, 1]. Received: alpha=0",
     "set alpha: a fraction in (0, 1], e.g. 0.5"),
    ("alpha=1.5", "alpha must be <= 1.0. Received: alpha=1.5",
     "set alpha: a fraction in (0, 1], e.g. 0.5"),
])
def test_bad_lookahead_settings_name_the_file_line_key_and_fix(tmp_path, cli, setting, message,
                                                               fix):
    key, value = setting.split("=")
    text = TINY.replace("{steps: 5, alpha: 0.5}", "{steps: 5, alpha: 0.5, " + f"{key}: {value}}}"
                        ).replace(f"{key}: 5, " if key == "steps" else f"{key}: 0.5, ", "")
    config = write(tmp_path / "t.yaml", text)
    result = cli("summary", "--config", config)
    assert result.code == 2 and "Traceback" not in result.err
    line = text.splitlines().index(next(s for s in text.splitlines() if "lookahead" in s)) + 1
    assert f"t.yaml: train.lookahead at line {line}: {message}; {fix}" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lookahead") / "data"
    write_mnist(root, n_train=240, n_test=40)  # 216 to train on: 9 steps of 24 an epoch
    return root


def straight_and_resumed(tmp_path: Path, data: Path, config: cnnzoo.ExperimentConfig,
                         stop: int) -> tuple[Path, Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(config, out=tmp_path / "straight", data_root=str(data), show_progress=False,
            callbacks=[])
        with pytest.raises(Interrupted):
            fit(config, out=tmp_path / "parted", data_root=str(data), show_progress=False,
                callbacks=[], stop_after_steps=stop)
        fit(config, resume=tmp_path / "parted", data_root=str(data), show_progress=False,
            callbacks=[])
    finally:
        torch.set_num_threads(before)
    return tmp_path / "straight", tmp_path / "parted"


def assert_same_run(straight: Path, parted: Path) -> None:
    a, _ = load_weights(straight / "model.safetensors")
    b, _ = load_weights(parted / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [load_state(r / "state.pt") for r in (straight, parted)]
    for part in ("model", "lookahead"):
        assert all(torch.equal(states[0][part][k], states[1][part][k]) for k in states[0][part])
    assert (straight / "steps.csv").read_text() == (parted / "steps.csv").read_text()


@pytest.mark.parametrize(("settings", "stop"), [
    (["train.ema.decay=0.9"], 13),  # mid-epoch 2, three steps past a sync
    (["train.optimizer.name=muon", "train.optimizer.fallback=adamw"], 9),  # epoch 1's end
])
def test_a_resumed_lookahead_run_is_bitwise_the_straight_run(tmp_path, data, settings, stop):
    config = cnnzoo.load_config(write(tmp_path / "t.yaml", TINY), settings)
    straight, parted = straight_and_resumed(tmp_path, data, config, stop)
    assert_same_run(straight, parted)
    state = load_state(straight / "state.pt")
    # 18 steps: the last sync was at 15, so the weights are three steps ahead of the slow
    assert not torch.equal(state["model"]["layers.1.weight"],
                           state["lookahead"]["layers.1.weight"])


def test_lookahead_with_a_time_budget_resumes_bitwise(tmp_path, data, monkeypatch):
    """A simulated second per step and a 30 s budget for 5 epochs of 9 steps: the plan
    cuts the run to 30 steps; interrupted at 28 and resumed, it ends as the straight run."""
    clock = {"now": 0.0}
    update = TrainStep.update

    def timed_update(self: TrainStep) -> None:
        update(self)
        clock["now"] += 1.0

    monkeypatch.setattr(TrainStep, "update", timed_update)
    config = cnnzoo.load_config(write(tmp_path / "t.yaml", TINY), [
        "train.epochs=5", "train.time_budget=30", "train.optimizer.name=muon"])
    common = {"data_root": str(data), "show_progress": False, "callbacks": [],
              "clock": lambda: clock["now"]}
    straight = fit(config, out=tmp_path / "straight", **common)
    clock["now"] = 0.0
    with pytest.raises(Interrupted):
        fit(config, out=tmp_path / "parted", stop_after_steps=28, **common)
    resumed = fit(config, resume=tmp_path / "parted", **common)
    assert straight.results["steps"] == resumed.results["steps"] == 30
    assert_same_run(tmp_path / "straight", tmp_path / "parted")
