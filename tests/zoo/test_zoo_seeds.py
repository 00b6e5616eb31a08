"""The zoo over several seeds: scripts/zoo_results.py --seeds records every seed of a
`cnnzoo train --seeds` parent (and with --reuse takes a finished parent as it is and
resumes an interrupted one), --add-seeds adds a parent's seeds to a record of one seed,
--report-only trains nothing, and docs/results.md marks which differences are within
the seeds' noise (Welch's p checked against scipy)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

import cnnzoo
from cnnzoo.config.bundled import write_measured
from cnnzoo.zoo.catalog import ZooEntry, seed_spread, weights_text
from tests.helpers.common import write
from tests.helpers.datafiles import write_mnist
from tests.helpers.runs import SMALL
from tests.zoo.test_results_script import RECORD

MACHINE = {"cpu": "x", "cores": 2, "torch": "2.14.1", "python": "3.11.9", "cnnzoo": "0.1"}


def seeded(accuracies: list[float], **extra) -> dict:
    """A record measured with one seed per accuracy, seed 0's run its own."""
    seeds = [{"seed": i, "test_accuracy": a, "train_seconds": 60.0 + i, "wall_seconds": 70.0 + i}
             for i, a in enumerate(accuracies)]
    return {**RECORD, "test_accuracy": accuracies[0], "seed": 0, "seeds": seeds, **extra}


def test_within_noise_is_welch_between_neighbours_by_mean(script):
    top, tight, loose, pair = ([0.9200, 0.9210, 0.9205], [0.9120, 0.9110, 0.9115],
                               [0.9050, 0.9150, 0.9080], [0.9050, 0.9120])
    records = {"top": seeded(top), "tight": seeded(tight), "loose": seeded(loose),
               "pair": seeded(pair), "single": {**RECORD, "test_accuracy": 0.99},
               "older": {**RECORD, "test_accuracy": 0.80}}
    tests = script.noise.noise_tests(records)
    # best mean first; the records of one seed are left out, however good
    assert [(t.name, t.better) for t in tests] == [("top", None), ("tight", "top"),
                                                   ("loose", "tight"), ("pair", "loose")]
    text = script.report.render_markdown(records, list(records), {}, MACHINE, "none",
                                         "python x", None)
    section = text.split("## Within noise")[1].split("\n## ")[0]
    for test, (better, worse) in zip(tests[1:], [(top, tight), (tight, loose), (loose, pair)],
                                     strict=True):
        expected = scipy_stats.ttest_ind(worse, better, equal_var=False).pvalue
        assert test.p == pytest.approx(expected, rel=1e-9)
        assert test.behind == pytest.approx(100 * (np.mean(better) - np.mean(worse)))
        side = "within" if expected >= 0.05 else "beyond"
        assert f"| {test.behind:.2f} points | {side} noise (p = {expected:.2g}) |" in section
    assert tests[1].p < 0.05 <= tests[2].p  # one of each, so both words are checked
    assert "| `top` | 92.05% +- 0.05 | - | - | best of the configs with seeds |" in section
    assert "One seed, not tested: `older`, `single`." in section


def test_seeds_section_and_headline_median(script):
    records = {"lenet5": seeded([0.9081, 0.9112, 0.9047], pretrained={"file": "w"}),
               "mlp": {**RECORD, "test_accuracy": 0.90}}
    text = script.report.render_markdown(records, ["lenet5", "mlp"], {}, MACHINE, "none",
                                         "python x", None)
    assert ("| `lenet5` | 0, 1, 2 | 90.81%, 91.12%, 90.47% | 90.81% | 90.80% +- 0.33 | 1m10s, "
            "1m11s, 1m12s | seed 0, weights shipped |") in text
    # One number for the row (the best here, per parameter): the seeds' median.
    assert "`lenet5`: 61,706 parameters, 416,520 mult-adds per image, 90.81% test accuracy " \
           "(the median of 3 seeds) after 10 epochs, 1m15s for seed 0's run" in text
    alone = script.report.render_markdown({"mlp": records["mlp"]}, [], {}, MACHINE, "none", "x",
                                          None)
    assert "## Seeds" not in alone
    assert "Fewer than two configs have seeds recorded" in alone
    assert "One seed, not tested: `mlp`." in alone


def test_weights_and_commands_name_their_seed(script):
    entry = ZooEntry("lenet5", None, "fashion_mnist", "28x28x1", 1, 1,
                     seeded([0.9, 0.91], pretrained={"file": "w", "seed": 0}), False)
    assert weights_text(entry) == "seed 0"
    assert weights_text(ZooEntry("mlp", None, None, "", 1, 1, {**RECORD, "pretrained": {
        "file": "w", "seed": 0}}, False)) == "yes"  # one seed: no question which
    args = script.measure.train_command("lenet5", [], Path("/m/runs/zoo-1/lenet5"), "cpu",
                                        "/m/data", 3)
    assert shlex.join(["cnnzoo", *script.measure.pasteable(args)]) == (
        "cnnzoo train --config lenet5 --seeds 3 --device cpu --out runs/zoo/lenet5")
    lines = script.measure.measured_lines(seeded([0.9081, 0.9112, 0.9047]))
    sentence = " ".join(line.removeprefix("# Measured here: ").removeprefix("#   ")
                        for line in lines[:-1])
    assert sentence.startswith("90.81% test accuracy with seed 0 (3 seeds: 90.80% +- 0.33, "
                               "median 90.81%) on Fashion-MNIST after 10 epochs")


def _argv(tmp_path, *extra: str) -> list[str]:
    return ["--configs-dir", str(tmp_path / "configs"), "--results",
            str(tmp_path / "docs" / "results.md"), *extra]


@pytest.mark.slow
def test_zoo_results_with_seeds_records_each_seed_and_reuses_the_parent(script, tmp_path,
                                                                        monkeypatch):
    write_mnist(tmp_path / "data", n_train=300, n_test=100)
    write(tmp_path / "configs" / "small.yaml", "# A test net.\n" + SMALL)
    monkeypatch.setattr(script.measure, "measure_step_seconds", lambda *a, **k: 0.01)
    argv = _argv(tmp_path, "--runs", str(tmp_path / "runs"), "--data-root",
                 str(tmp_path / "data"), "--epochs", "1", "--budget-minutes", "5", "--seeds", "2",
                 "--reuse")
    assert script.run.main(argv) == 0
    parent = tmp_path / "runs" / "small"
    runs = [json.loads((parent / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    record = json.loads((tmp_path / "configs" / "results.json").read_text())["configs"]["small"]
    assert record["seeds"] == [{"seed": s, "test_accuracy": r["test_accuracy"],
                                "train_seconds": round(r["train_seconds"], 1),
                                "wall_seconds": round(r["wall_seconds"], 1)}
                               for s, r in enumerate(runs)]
    accuracies = [r["test_accuracy"] for r in runs]
    assert record["test_accuracy_sd"] == pytest.approx(np.std(accuracies, ddof=1))
    assert seed_spread(record)["mean"] == pytest.approx(np.mean(accuracies))
    assert (record["seed"], record["test_accuracy"]) == (0, runs[0]["test_accuracy"])
    assert record["wall_seconds"] == round(runs[0]["wall_seconds"], 1)
    assert record["pretrained"]["seed"] == 0
    assert record["command"] == shlex.join([
        "cnnzoo", "train", "--config", str(tmp_path / "configs" / "small.yaml"), "--seeds", "2",
        "--set", "train.epochs=1", "--device", "cpu", "--out", "runs/zoo/small"])
    from cnnzoo.runs.pretrained import open_packed

    packed = open_packed(str(tmp_path / "configs" / record["pretrained"]["file"]))
    assert packed.config.train.seed == 0  # the file itself says whose weights
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "| `small` | 0, 1 |" in report and "seed 0, weights shipped |" in report
    assert "with seed 0 (2 seeds: " in (tmp_path / "configs" / "small.yaml").read_text()

    # Again with --reuse: the finished parent is recorded as it is, nothing trains.
    stamps = {p: p.stat().st_mtime_ns for p in parent.rglob("*") if p.is_file()}
    calls = []
    real_call = script.run.subprocess.call
    monkeypatch.setattr(script.run.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    assert script.run.main(argv) == 0
    assert calls == []
    assert stamps == {p: p.stat().st_mtime_ns for p in parent.rglob("*") if p.is_file()}
    again = json.loads((tmp_path / "configs" / "results.json").read_text())["configs"]["small"]
    assert again["seeds"] == record["seeds"]

    # Interrupted before seed 1's first checkpoint: that seed is started afresh by
    # `train --resume PARENT`, seed 0 is left alone.
    for name in ("results.json", "state.pt"):
        (parent / "seed-1" / name).unlink(missing_ok=True)
    (parent / "seeds-summary.json").unlink()
    monkeypatch.setattr(script.run.subprocess, "call",
                        lambda *a, **k: calls.append(a[0]) or real_call(*a, **k))
    assert script.run.main(argv) == 0
    assert calls[0][3:] == ["train", "--resume", str(parent), "--device", "cpu", "--data-root",
                            str(tmp_path / "data")]
    assert stamps[parent / "seed-0" / "results.json"] == (
        parent / "seed-0" / "results.json").stat().st_mtime_ns
    resumed = json.loads((parent / "seed-1" / "results.json").read_text())
    assert resumed["test_accuracy"] == runs[1]["test_accuracy"]  # the same seed, bit for bit


def test_seeds_leave_a_single_run_in_their_place_alone(script, tmp_path, monkeypatch):
    """A finished single run where a parent would go (runs/zoo/NAME of an earlier
    measurement) is not deleted by --seeds --reuse: the config is reported instead."""
    write(tmp_path / "configs" / "small.yaml", "# A test net.\n" + SMALL)
    single = write(tmp_path / "runs" / "small" / "results.json", "{}")
    monkeypatch.setattr(script.measure, "measure_step_seconds", lambda *a, **k: 0.01)
    monkeypatch.setattr(script.run.subprocess, "call", lambda *a, **k: pytest.fail("trained"))
    argv = _argv(tmp_path, "--runs", str(tmp_path / "runs"), "--seeds", "3", "--reuse",
                 "--no-update-configs")
    assert script.run.main(argv) == 1
    assert single.exists()
    assert "holds no seeds parent" in (tmp_path / "docs" / "results.md").read_text()


def _small_record(configs, **extra) -> dict:
    plan = cnnzoo.plan_experiment(cnnzoo.load_config(configs / "small.yaml"))
    return {**RECORD, "params": plan.total_params, "macs": plan.total_macs,
            "command": "OMP_NUM_THREADS=2 cnnzoo train --config small --device cpu "
                       "--out runs/zoo/small", **extra}


def _hand_made_parent(path, config_yaml: str, accuracies: dict[int, float]):
    """A finished `train --seeds` parent as far as the zoo reads one."""
    seeds = list(accuracies)
    write(path / "config.yaml", config_yaml)
    write(path / "seeds.json", json.dumps({"name": "small", "seeds": seeds, "init_from": None}))
    runs = []
    for seed, accuracy in accuracies.items():
        write(path / f"seed-{seed}" / "results.json", json.dumps({"test_accuracy": accuracy}))
        runs.append({"seed": seed, "run": f"seed-{seed}", "test_accuracy": accuracy,
                     "train_seconds": 50.0 + seed, "wall_seconds": 55.04 + seed})
    write(path / "seeds-summary.json", json.dumps({"name": "small", "seeds": seeds,
                                                   "runs": runs}))
    return path


def test_add_seeds_extends_a_record_without_training(script, tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    write(configs / "small.yaml", "# A test net.\n" + SMALL)
    pretrained = {"file": "weights/small.safetensors", "sha256": "0" * 64}
    write_measured({"small": _small_record(configs, pretrained=pretrained)}, configs)
    monkeypatch.setattr(script.measure, "machine_info", lambda: pytest.fail("no machine"))
    monkeypatch.setattr(script.run.subprocess, "call", lambda *a, **k: pytest.fail("trained"))
    yaml = cnnzoo.load_config(configs / "small.yaml").to_yaml()
    parent = _hand_made_parent(tmp_path / "elsewhere" / "small-seeds", yaml,
                               {1: 0.9012, 2: 0.9133})
    assert script.run.main(_argv(tmp_path, "--add-seeds", f"small={parent}")) == 0
    record = json.loads((configs / "results.json").read_text())["configs"]["small"]
    assert record["seeds"] == [
        {"seed": 0, "test_accuracy": 0.9081, "train_seconds": 62.4, "wall_seconds": 75.0},
        {"seed": 1, "test_accuracy": 0.9012, "train_seconds": 51.0, "wall_seconds": 56.0},
        {"seed": 2, "test_accuracy": 0.9133, "train_seconds": 52.0, "wall_seconds": 57.0}]
    assert record["test_accuracy_sd"] == pytest.approx(np.std([0.9081, 0.9012, 0.9133], ddof=1))
    assert (record["seed"], record["test_accuracy"], record["pretrained"]["seed"]) == (0, 0.9081,
                                                                                        0)
    assert record["seeds_command"] == ("OMP_NUM_THREADS=2 cnnzoo train --config small --seeds "
                                       "1,2 --device cpu --out runs/zoo/small-seeds")
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "--add-seeds small=runs/zoo/small-seeds" in report and "elsewhere" not in report
    assert "That invocation trained nothing" in report
    assert "90.81% test accuracy (the median of 3 seeds)" in report
    assert f"; its other seeds: `{record['seeds_command']}`" in report

    before = (configs / "results.json").read_text()
    other = _hand_made_parent(tmp_path / "lr", cnnzoo.load_config(
        configs / "small.yaml", ["train.optimizer.lr=0.5"]).to_yaml(), {3: 0.9})
    overlap = _hand_made_parent(tmp_path / "overlap", yaml, {2: 0.9, 3: 0.9})
    for bad in (other, overlap, tmp_path / "nothing"):
        assert script.run.main(_argv(tmp_path, "--add-seeds", f"small={bad}")) == 2
    assert (configs / "results.json").read_text() == before


def test_seeds_added_one_parent_at_a_time_keep_every_command(script, tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    write(configs / "small.yaml", "# A test net.\n" + SMALL)
    write_measured({"small": _small_record(configs)}, configs)
    monkeypatch.setattr(script.run.subprocess, "call", lambda *a, **k: pytest.fail("trained"))
    yaml = cnnzoo.load_config(configs / "small.yaml").to_yaml()
    first = _hand_made_parent(tmp_path / "small-seed-1", yaml, {1: 0.9012})
    second = _hand_made_parent(tmp_path / "small-seed-2", yaml, {2: 0.9133})
    assert script.run.main(_argv(tmp_path, "--add-seeds", f"small={first}",
                                 "--add-seeds", f"small={second}")) == 0
    record = json.loads((configs / "results.json").read_text())["configs"]["small"]
    assert [e["seed"] for e in record["seeds"]] == [0, 1, 2]
    assert record["test_accuracy_sd"] == pytest.approx(np.std([0.9081, 0.9012, 0.9133], ddof=1))
    assert record["seeds_command"] == (
        "OMP_NUM_THREADS=2 cnnzoo train --config small --seeds 1, --device cpu --out "
        "runs/zoo/small-seed-1; OMP_NUM_THREADS=2 cnnzoo train --config small --seeds 2, "
        "--device cpu --out runs/zoo/small-seed-2")


def test_report_only_rewrites_the_report_alone(script, tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    write(configs / "small.yaml", "# A test net.\n" + SMALL)
    write_measured({"small": _small_record(configs)}, configs)
    before = (configs / "results.json").read_bytes(), (configs / "small.yaml").read_bytes()
    monkeypatch.setattr(script.measure, "machine_info", lambda: pytest.fail("no machine"))
    assert script.run.main(_argv(tmp_path, "--report-only")) == 0
    report = (tmp_path / "docs" / "results.md").read_text()
    assert "| `small` |" in report and "That invocation trained nothing" in report
    assert ((configs / "results.json").read_bytes(), (configs / "small.yaml").read_bytes()) == \
        before
    with pytest.raises(SystemExit):
        script.run.main(_argv(tmp_path, "--report-only", "--only", "small"))
