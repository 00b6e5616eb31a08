"""The run directory (cnnzoo.runs.rundir): its name, the CSV logs cut back to a
checkpoint, and reading a run back with one clear error for anything that is not one."""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.runs import rundir
from tests.helpers.common import write

INFO = {"classes": ["cat", "dog"], "input": [8, 8, 1], "mean": [0.5], "std": [0.25]}


def fake_run(folder: Path, info: object = INFO) -> Path:
    write(folder / rundir.CONFIG, "model:\n  layers:\n    - input: {width: 8, height: 8, "
          "depth: 1}\n    - fc: 2\n")
    (folder / rundir.RUN).write_text(json.dumps(info))
    return folder


def test_a_run_directory_is_named_after_the_config_and_the_second(tmp_path, monkeypatch):
    now = datetime.datetime(2026, 12, 6, 4, 5, 6)
    fixed = SimpleNamespace(datetime=SimpleNamespace(now=lambda: now))
    monkeypatch.setattr(rundir, "dt", fixed)
    first = rundir.default_run_dir("lenet5", tmp_path)
    assert first == tmp_path / "lenet5-20261206-040506"
    first.mkdir()
    assert rundir.default_run_dir("lenet5", tmp_path) == tmp_path / "lenet5-20261206-040506-2"
    claimed = rundir.default_run_dir("lenet5", tmp_path, claim=True)
    assert claimed == tmp_path / "lenet5-20261206-040506-2" and claimed.is_dir()


def test_a_csv_log_counts_its_rows_and_is_cut_back_to_a_checkpoint(tmp_path):
    path = tmp_path / rundir.STEPS
    log = rundir.CsvLog(path, rundir.STEP_FIELDS)
    rows = [{"step": i, "epoch": 0, "batch": i, "loss": 1.0 / (i + 1), "lr": 0.1}
            for i in range(5)]
    log.append(rows[:3])
    log.append(rows[3:])
    assert log.rows == 5
    again = rundir.CsvLog(path, rundir.STEP_FIELDS)  # a resumed run counts what is there
    assert again.rows == 5
    again.truncate(2)
    with open(path, newline="") as handle:
        kept = list(csv.DictReader(handle))
    assert [r["step"] for r in kept] == ["0", "1"] and again.rows == 2
    assert float(kept[1]["loss"]) == 0.5
    again.append(rows[4:])
    assert path.read_text().count("step,epoch") == 1  # the header is written once


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "nowhere", "no run directory"),
    (lambda p: write(p / "file.txt", "x"), "is not a run directory"),
    (lambda p: p, "is not a cnnzoo run: it has no config.yaml and run.json"),
    (lambda p: fake_run(p, ["not", "an", "object"]), "damaged: expected a JSON object"),
    (lambda p: fake_run(p, {**INFO, "std": [0.0]}), "'std' holds a zero"),
    (lambda p: fake_run(p, {**INFO, "input": [8, 8]}), "'input' must be [width, height"),
])
def test_what_is_not_a_run_is_one_clear_error(tmp_path, make, message):
    with pytest.raises(CheckpointError) as error:
        rundir.open_run(make(tmp_path))
    assert message in str(error.value)


def test_a_run_reads_back_its_config_info_and_results(tmp_path):
    run = rundir.open_run(fake_run(tmp_path))
    assert run.classes == ["cat", "dog"] and run.config.model.layers[-1].type_name == "fc"
    assert run.results is None  # not finished
    rundir.write_json(tmp_path / rundir.RESULTS, {"params": 1, "macs": 2,
                                                  "test_accuracy": 0.5, "train_seconds": 3})
    assert run.results["test_accuracy"] == 0.5
    rundir.write_json(tmp_path / rundir.RESULTS, {"params": "many"})
    with pytest.raises(CheckpointError, match="'params' must be a number"):
        _ = run.results


def test_a_new_run_refuses_a_file_and_a_directory_that_holds_a_run(tmp_path):
    with pytest.raises(CnnzooError, match="is a file"):
        rundir.check_new_run_dir(write(tmp_path / "out", "x"))
    with pytest.raises(CnnzooError, match="already holds a run; continue it with"):
        rundir.check_new_run_dir(fake_run(tmp_path / "run"))
    rundir.check_new_run_dir(tmp_path / "fresh")  # a new folder is fine
    (tmp_path / "run" / rundir.RESULTS).write_text("{}")
    with pytest.raises(CnnzooError, match="the run is finished"):
        rundir.refuse_finished(tmp_path / "run")


def test_damaged_metrics_are_a_checkpoint_error(tmp_path):
    assert rundir.read_metrics(tmp_path) == []  # none yet
    (tmp_path / rundir.METRICS).write_bytes(b"epoch,split\n\xff\xfe,train\n")
    with pytest.raises(CheckpointError, match=r"metrics\.csv is damaged"):
        rundir.read_metrics(tmp_path)
