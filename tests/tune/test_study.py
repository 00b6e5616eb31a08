"""The study's own rules, without training: which trial may train (the rule that keeps a
shared study to exactly N finished trials), and the record that lets a joining process
be checked and a report be made from the storage alone."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from cnnzoo.errors import ConfigError
from tests.helpers.common import write
from tests.tune.test_tune import space_file, tiny

C, P, R, W, F = "complete", "pruned", "running", "waiting", "failed"
SURPLUS = "running-surplus"  # a trial that was itself refused and is about to fail

# (states of the trials numbered before a new one, N, may the new one train?)
RULES = [
    ([], 1, True),
    ([C], 1, False),
    ([C, F], 2, True),  # a failed trial holds no place
    ([C, P], 2, False),  # a pruned one does: it is finished
    ([C, R], 2, False),  # a trial training elsewhere may still finish
    ([C, SURPLUS], 2, True),  # a refused one will not
    ([C, W], 2, False),  # a retry waiting to be picked up will run
    ([F, F, F], 1, True),
    ([C, C, R, W, F], 5, True),
]


def _study(states: list[str]) -> optuna.Study:
    study = optuna.create_study()
    for state in states:
        if state == W:
            study.enqueue_trial({})
            continue
        kind = {C: TrialState.COMPLETE, P: TrialState.PRUNED, R: TrialState.RUNNING,
                SURPLUS: TrialState.RUNNING, F: TrialState.FAIL}[state]
        study.add_trial(create_trial(state=kind, value=0.5 if kind == TrialState.COMPLETE
                                     else None, user_attrs={"surplus": True} if state == SURPLUS
                                     else {}))
    return study


@pytest.mark.parametrize(("states", "trials", "needed"), RULES)
def test_which_trial_may_train(states, trials, needed):
    from cnnzoo.tune.study import is_needed

    earlier = _study(states).get_trials()
    assert [t.number for t in earlier] == list(range(len(states)))
    assert is_needed(earlier, trials) == needed


@pytest.mark.slow
def test_a_refused_trial_is_marked_and_never_trains(tmp_path):
    """The rule inside the loop: a trial asked for when the study is full is refused
    before the objective runs and stays out of the finished count."""
    from cnnzoo.tune.study import counts, run_trials

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    study.add_trial(create_trial(value=1.0))
    study.enqueue_trial({"x": 0.5})  # a retry waiting: the one place left is its
    called = []

    def objective(trial: optuna.Trial) -> float:
        called.append(trial.number)
        return trial.suggest_float("x", 0.0, 1.0)

    assert run_trials(study, objective, trials=2, storage=url, heartbeat=5, poll_seconds=0.01)
    assert called == [1]  # the waiting one ran, nothing after it
    assert counts(study) == (2, 0)
    assert run_trials(study, objective, trials=2, storage=url, heartbeat=5)  # full: at once
    assert called == [1]


@pytest.mark.slow
def test_a_joining_process_with_another_space_is_refused_and_the_record_kept(tmp_path):
    from cnnzoo.tune.record import read_record
    from cnnzoo.tune.space import load_space
    from cnnzoo.tune.study import TuneSettings, open_study

    space = space_file(tmp_path)
    settings = TuneSettings(config=str(tiny(tmp_path)), base=(), space_path=str(space),
                            out=tmp_path, storage=None, study="s", trials=4, workers=1,
                            threads=1, heartbeat=5, data_root=None, device="cpu")
    study = open_study(settings, load_space(space))
    record = read_record(study)
    assert record is not None and record.space_text == space.read_text()
    assert record.base("s").to_yaml() == record.config_text  # the config reads back
    other = write(tmp_path / "other.yaml", space.read_text().replace("[3, 5]", "[3, 7]"))
    with pytest.raises(ConfigError, match="was started with another space"):
        open_study(settings, load_space(other))
    with pytest.raises(ConfigError, match=r"another config \(or --set\)"):
        open_study(TuneSettings(**{**settings.__dict__, "base": ("train.epochs=3",)}),
                   load_space(space))
    again = open_study(settings, load_space(space))  # the same files join
    assert read_record(again) == record
