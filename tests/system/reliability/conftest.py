"""The runs the reliability tests share, trained once for the whole package, and
the settings every one of them runs under."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.training import trainer
from cnnzoo.training.stopping import Interrupted
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist
from tests.system.reliability.common import TINY, train


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """One thread, here and in the processes these tests start: the tiny networks run
    several times faster on a busy machine, and results match across processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's pictures are by-products that never change training; skip them."""
    monkeypatch.setattr(trainer, "default_callbacks", lambda: [])



@pytest.fixture(scope="package")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="package")
def data_root(work: Path) -> Path:
    write_mnist(work / "data", n_train=240, n_test=40)
    return work / "data"


@pytest.fixture(scope="package")
def config_file(work: Path) -> Path:
    return write(work / "tiny.yaml", TINY)



@pytest.fixture(scope="package")
def straight(work: Path, data_root: Path, config_file: Path) -> Path:
    """The reference: all 27 steps in one go."""
    return train(cnnzoo.load_config(config_file), data_root, out=work / "straight")


@pytest.fixture(scope="package")
def interrupted(work: Path, data_root: Path, config_file: Path, tmp_path_factory):
    """A fresh copy of the run stopped after global step `n` (cached per `n`)."""
    cache: dict[int, Path] = {}

    def make(n: int) -> Path:
        if n not in cache:
            with pytest.raises(Interrupted):
                train(cnnzoo.load_config(config_file), data_root, out=work / f"stopped-{n}",
                      stop_after_steps=n)
            cache[n] = work / f"stopped-{n}"
        copy = tmp_path_factory.mktemp(f"stopped-{n}") / "run"
        shutil.copytree(cache[n], copy)
        return copy

    return make
