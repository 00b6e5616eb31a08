"""The Trainer's shape: its fields declared in one place, its phases refused out of order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.training.trainer import PHASE_NEEDS, Trainer
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist

TINY = """\
    model: {layers: [{conv: {filters: 4, kernel: 3, padding: same}}, relu, {pool: 4},
                     {fc: 10}]}
    data: {dataset: fashion_mnist, val_split: 0.1}
    train: {epochs: 1, batch_size: 64, optimizer: {name: sgd, lr: 0.05}}
    """


@pytest.fixture
def trainer(tmp_path: Path) -> Trainer:
    write_mnist(tmp_path / "data", n_train=200, n_test=64)
    config = cnnzoo.load_config(write(tmp_path / "tiny.yaml", textwrap.dedent(TINY)))
    return Trainer(config, out=tmp_path / "run", data_root=str(tmp_path / "data"),
                   show_progress=False)


@pytest.mark.parametrize(("phase", "needs"), [
    ("set_up", "open_run"), ("train_epoch", "set_up"), ("validate", "set_up"),
    ("test", "set_up"), ("finish", "test"),
])
def test_a_phase_called_too_early_names_the_one_it_needs(trainer, phase, needs) -> None:
    assert PHASE_NEEDS[phase] == needs
    args = (None,) if phase in ("end_epoch", "finish") else ()
    with pytest.raises(RuntimeError, match=rf"Trainer\.{phase}\(\) needs Trainer\.{needs}\(\)"):
        getattr(trainer, phase)(*args)
    assert not (trainer.out / "run.json").exists()


def test_open_run_twice_is_refused(trainer) -> None:
    trainer.open_run()
    with pytest.raises(RuntimeError, match=r"Trainer\.open_run\(\) has already run"):
        trainer.open_run()


@pytest.mark.slow
def test_every_field_is_declared_in_one_place(trainer) -> None:
    """What a whole run sets on the trainer is what `__init__` sets or the class declares
    (with the phase that sets it)."""
    from_init = set(vars(trainer))
    trainer.run()
    declared = from_init | set(Trainer.__annotations__)
    assert set(vars(trainer)) <= declared, set(vars(trainer)) - declared
    # and the declarations are not stale: each one was set by the run
    assert set(Trainer.__annotations__) <= set(vars(trainer))
