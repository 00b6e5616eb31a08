"""Rows a time budget stopped, on hand-made records: the epochs cell says how far the run got
and which budget stopped it, the rule that rows given the same `--set train.time_budget`
shared is stated once above the table (and not at all where no two rows share one), the
picture marks such rows apart and its labels still overlap nowhere, and --report-only
writes all of it from results.json alone."""

from __future__ import annotations

import shlex
import shutil

import pytest

from cnnzoo.config.bundled import read_measured, write_measured
from cnnzoo.zoo.report import record_points
from cnnzoo.zoo.rules import budget_text, epochs_cell, rule_lines
from tests.helpers.common import ROOT
from tests.utils.test_pictures import assert_readable
from tests.zoo.test_results_script import RECORD
from tests.zoo.test_zoo_seeds import MACHINE

CIFAR = ["data.dataset=fashion_mnist", "data.pad=2", "data.channels=3"]
RULE = ["train.time_budget=900", "train.precision=auto"]


def budget_record(name: str, ran: float, extra: tuple[str, ...] = (), **changes) -> dict:
    """A record as `zoo_results.py --reuse` writes it of a run the 900 s budget stopped."""
    sets = [*CIFAR, *RULE, *extra]
    command = shlex.join(["cnnzoo", "train", "--config", name,
                          *(w for s in sets for w in ("--set", s)),
                          "--device", "cpu", "--out", f"runs/zoo/{name}"])
    return {**RECORD, "epochs": ran, "adapted": CIFAR, "command": f"OMP_NUM_THREADS=2 {command}",
            "epochs_configured": 100, "time_budget": 900.0, "precision": "bf16", **changes}


WARMUP = ("train.scheduler.warmup_epochs=25",)


def classics() -> dict[str, dict]:
    return {"vgg11-bn": budget_record("vgg11-bn", 2.46),
            "nin": budget_record("nin", 3.1, WARMUP),
            "all-cnn-c": budget_record("all-cnn-c", 4.07)}


@pytest.mark.parametrize(("seconds", "text"), [
    (900, "15m"), (3300, "55m"), (300, "5m"), (3600, "1h"), (5400, "1h30m"), (90, "90s"),
    (125, "125s"), (12.5, "12.5s")])
def test_a_budget_reads_in_the_unit_it_was_chosen_in(seconds, text):
    assert budget_text(seconds) == text


def test_the_epochs_cell_names_the_budget_that_stopped_the_run():
    assert epochs_cell("vgg11-bn", budget_record("vgg11-bn", 2.46)) == \
        "2.46 of 100 epochs (15m budget)"
    # An older record without the run's own account: the budget from its command...
    older = {**RECORD, "epochs": 7.45,
             "command": "cnnzoo train --config capsnet --set train.time_budget=3300 "
                        "--device cpu --out runs/zoo/capsnet"}
    assert epochs_cell("capsnet", older) == "7.45 of 50 epochs (55m budget)"
    # ...or from its config (fashion-best.yaml trains to train.time_budget: 3000).
    assert epochs_cell("fashion-best", {**RECORD, "epochs": 43.02}) == \
        "43.02 of 90 epochs (50m budget)"


def test_rows_without_a_budget_read_as_before():
    # Set to fewer epochs than the config asks: cut short, but by no budget.
    one = {**RECORD, "epochs": 1, "command": "cnnzoo train --config vgg11-bn --set "
                                             "train.epochs=1 --device cpu"}
    assert epochs_cell("vgg11-bn", one) == "1 of 100 epochs"
    assert epochs_cell("lenet5", RECORD) == "10"
    # A budget that left every configured epoch to run stopped nothing.
    assert epochs_cell("fashion-speedrun", {**RECORD, "epochs": 7}) == "7"
    assert epochs_cell("vgg11-bn", budget_record("vgg11-bn", 100)) == "100"
    # A config that is not bundled: the run's own account of its epochs.
    assert epochs_cell("elsewhere", budget_record("elsewhere", 2.5)) == \
        "2.5 of 100 epochs (15m budget)"


def test_make_record_keeps_what_the_report_tells_a_budget_by(script):
    results = {"test_accuracy": 0.9, "test_loss": 0.3, "dataset": "fashion_mnist",
               "test_samples": 10_000, "train_seconds": 880.0, "params": 1, "macs": 1,
               "device": "cpu (2 threads)", "epochs": 3, "epochs_run": 2.4637,
               "epochs_configured": 100, "time_budget": 900.0, "precision": "bf16",
               "budget": {"seconds": 900.0, "planned_steps": 1040, "steps": 1040}}
    # "epochs" counts the epochs begun (the last one partly), "epochs_run" how far it got.
    machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1"}
    record = script.measure.make_record(results, {"train_samples": 54_000}, ["train"], CIFAR,
                                        900.0, machine, "2026-12-02")
    assert (record["epochs"], record["epochs_configured"], record["time_budget"],
            record["precision"]) == (2.46, 100, 900.0, "bf16")
    assert epochs_cell("vgg11-bn", record) == "2.46 of 100 epochs (15m budget)"
    unbudgeted = script.measure.make_record({**results, "time_budget": None}, {
        "train_samples": 54_000}, ["train"], [], 900.0, machine, "2026-12-02")
    assert "time_budget" not in unbudgeted


def test_rows_sharing_a_command_line_budget_state_their_rule_once():
    records = {"lenet5": RECORD, **classics()}
    (line,) = rule_lines(records, list(records))
    assert line == (
        "- One rule for `vgg11-bn`, `nin` and `all-cnn-c`: a 15m time budget for the training "
        "loop (`--set train.time_budget=900`), each its own optimizer and schedule, fitted by "
        "the budget to the steps that fit; `--set train.precision=auto` (they trained in "
        "bf16); run with `OMP_NUM_THREADS=2`; `nin` also "
        "`--set train.scheduler.warmup_epochs=25`.")
    # The dataset adaptation is each row's own fitting to Fashion-MNIST, not the rule.
    assert "data.pad" not in line


def test_no_rule_without_two_rows_sharing_a_command_line_budget():
    assert rule_lines({"lenet5": RECORD}, ["lenet5"]) == []
    alone = {"lenet5": RECORD, "vgg11-bn": budget_record("vgg11-bn", 2.46)}
    assert rule_lines(alone, list(alone)) == []
    # A budget of the config's own (fashion-best) is no --set rule either.
    assert rule_lines({"fashion-best": {**RECORD, "epochs": 43.02}, "lenet5": RECORD},
                      ["fashion-best", "lenet5"]) == []
    other = {**classics(), "capsnet": {**RECORD, "command": "cnnzoo train --config capsnet "
                                       "--set train.time_budget=3300 --device cpu"}}
    assert len(rule_lines(other, list(other))) == 1  # capsnet's 55m is its own


def test_the_rule_and_the_cells_are_in_the_table(script):
    records = {"lenet5": RECORD, **classics()}
    text = script.report.render_markdown(records, ["lenet5", "vgg11-bn", "nin", "all-cnn-c"],
                                         {}, MACHINE, "none", "python x", None)
    rule = text.index("- One rule for `vgg11-bn`, `nin` and `all-cnn-c`: a 15m time budget")
    assert rule < text.index("| config | params |")
    assert "| 90.81% | 2.46 of 100 epochs (15m budget) | 54,000 / 10,000 |" in text
    assert "| 90.81% | 10 | 54,000 / 10,000 |" in text  # lenet5 completed its epochs
    plain = script.report.render_markdown({"lenet5": RECORD}, ["lenet5"], {}, MACHINE, "none",
                                          "python x", None)
    assert "One rule for" not in plain


def test_budget_rows_are_marked_in_the_picture():
    points = {p.label: p for p in record_points({"lenet5": RECORD, **classics()})}
    assert points["nin"].budgeted and points["nin"].limited == "3.1 of 100 epochs (15m budget)"
    assert not points["lenet5"].budgeted and points["lenet5"].limited is None


def test_the_picture_stays_readable_with_the_classics_budget_stopped():
    """The bundled records with every adapted row replaced by a budget-stopped run near
    the others' accuracy: the longest labels, in the most crowded place."""
    records = read_measured()
    adapted = [name for name, r in records.items() if r["adapted"]]
    assert adapted, "the bundled records have no adapted rows"
    for i, name in enumerate(adapted):
        records[name] = budget_record(name, 2.0 + 0.37 * i, params=records[name]["params"],
                                      test_accuracy=0.905 + 0.004 * i)
    points = record_points(records)
    assert sum(p.budgeted for p in points) >= len(adapted)
    assert_readable(points)


def test_report_only_writes_the_budget_rows_from_the_records(script, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    records = classics()
    for name in records:
        shutil.copy(ROOT / "configs" / f"{name}.yaml", configs)
    write_measured(records, configs)
    before = (configs / "results.json").read_bytes()
    argv = ["--configs-dir", str(configs), "--results", str(tmp_path / "docs" / "results.md"),
            "--report-only"]
    assert script.run.main(argv) == 0
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "- One rule for `all-cnn-c`, `nin` and `vgg11-bn`: a 15m time budget" in report
    assert "| 2.46 of 100 epochs (15m budget) |" in report
    assert (tmp_path / "docs" / "accuracy-vs-params.png").stat().st_size > 0
    assert (configs / "results.json").read_bytes() == before
