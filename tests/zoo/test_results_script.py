"""The zoo measurement that scripts/zoo_results.py drives: adapting configs to
Fashion-MNIST, the time budget, records, the configs' measured lines, results.md, and
the script end to end on fake files."""

from __future__ import annotations

import json
import math

import pytest

import cnnzoo
from tests.helpers.common import ROOT, write
from tests.helpers.datafiles import write_mnist
from tests.helpers.runs import SMALL, assert_png


def _overrides(script, text: str) -> list[str]:
    config = cnnzoo.parse_config(text)
    return script.measure.fashion_overrides(config, cnnzoo.plan_experiment(config))


def test_configs_are_adapted_to_fashion_mnist(script, tmp_path):
    assert _overrides(script, (ROOT / "configs" / "lenet5.yaml").read_text()) == []
    assert _overrides(script, (ROOT / "configs" / "cs231n-simple.yaml").read_text()) == [
        "data.dataset=fashion_mnist", "data.pad=2", "data.channels=3"]
    odd = ("model: {layers: [input: {width: 20, height: 24, depth: 3}, fc: 10]}\n"
           "data: {dataset: cifar10, resize: [24, 20]}\n")
    assert _overrides(script, odd) == [
        "data.dataset=fashion_mnist", "data.resize=[24,20]", "data.channels=3"]
    padded = ("model: {layers: [input: {width: 32, height: 32, depth: 1}, fc: 10]}\n"
              "data: {dataset: mnist, pad: 2}")
    assert _overrides(script, padded) == ["data.dataset=fashion_mnist"]
    with pytest.raises(script.measure.Skip, match="100 classes"):
        _overrides(script, "model: {layers: [fc: 100]}\ndata: {dataset: cifar100}")
    path = write(tmp_path / "odd.yaml", odd)
    adapted = script.measure.adapted_config(path, ["train.epochs=1"])
    assert adapted.plan.input == cnnzoo.layers.shapes.Volume(20, 24, 3)
    assert adapted.config.data.dataset == "fashion_mnist" and adapted.config.train.epochs == 1
    assert adapted.sets[-1] == "train.epochs=1" and "train.epochs=1" not in adapted.adaptation


def test_epochs_are_capped_by_the_budget(script):
    config = cnnzoo.parse_config(SMALL, ["data.limit_train=2000", "data.limit_test=1000"])
    work = script.measure.Workload.of(config)
    assert (work.train_images, work.val_images, work.test_images) == (1800, 200, 1000)
    per_epoch = 1800 // 32 * 0.1 + 200 / 32 * 0.1 / 3
    test = 1000 / 32 * 0.1 / 3
    assert work.seconds(3, 0.1) == pytest.approx(3 * per_epoch + test)
    assert script.measure.choose_epochs(10, work, 0.1, 3 * per_epoch + test + 0.01) == 3
    assert script.measure.choose_epochs(2, work, 0.1, 1000.0) == 2
    assert script.measure.choose_epochs(10, work, 0.1, None) == 10
    with pytest.raises(script.measure.Skip, match=r"over the budget of 5\.0s"):
        script.measure.choose_epochs(10, work, 0.1, 5.0)


RECORD = {
    "test_accuracy": 0.9081, "test_loss": 0.26, "dataset": "fashion_mnist", "epochs": 10,
    "train_images": 54_000, "test_images": 10_000, "train_seconds": 62.4, "wall_seconds": 75.0,
    "params": 61_706, "macs": 416_520,
    "device": "cpu (2 threads)", "machine": "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1",
    "date": "2025-01-02", "adapted": [],
    "command": "cnnzoo train --config lenet5 --device cpu --out runs/zoo-1/lenet5",
}


def test_a_record_counts_the_epochs_a_time_budget_let_run(script):
    results = {"test_accuracy": 0.89, "test_loss": 0.08, "dataset": "fashion_mnist",
               "test_samples": 10_000, "train_seconds": 3328.6, "params": 1, "macs": 1,
               "device": "cpu (2 threads)", "epochs": 50, "epochs_run": 7.454}
    info = {"train_samples": 54_000}

    def record(**changes):
        machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1"}
        return script.measure.make_record({**results, **changes}, info, ["train"], [], 3487.0,
                                          machine, "2026-12-01")

    assert record()["epochs"] == 7.45
    assert record(epochs_run=50.0)["epochs"] == 50  # all of them: the configured number
    assert record(epochs_run=None)["epochs"] == 50  # a record from before epochs_run
    assert "after 7.45 epochs (" in " ".join(script.measure.measured_lines(record()))


def test_measured_line_is_rewritten_in_place(script, tmp_path):
    original = (ROOT / "configs" / "lenet5.yaml").read_text()
    lines = script.measure.measured_lines(RECORD)
    assert lines[0].startswith("# Measured here: 90.81% test accuracy")
    def sentence(lines: list[str]) -> str:
        return " ".join(line.removeprefix("# Measured here: ").removeprefix("#   ")
                        for line in lines[:-1])

    assert sentence(lines) == ("90.81% test accuracy on Fashion-MNIST after 10 epochs (1m02s of "
                        "training on Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1; "
                        "2025-01-02):")
    small = script.measure.measured_lines({**RECORD, "epochs": 1, "train_images": 1_800,
                                   "test_images": 1_000, "adapted": ["data.pad=2"]})
    assert "Fashion-MNIST (adapted: data.pad=2), on 1,800 training and 1,000 test images " \
        "after 1 epoch (" in sentence(small)
    assert lines[-1] == "#   cnnzoo train --config lenet5 --device cpu"
    assert all(len(line) <= 88 and line.startswith("#") for line in lines[:-1])
    once = script.measure.rewrite_measured(original, lines)
    twice = script.measure.rewrite_measured(
        once, script.measure.measured_lines({**RECORD, "epochs": 3}))
    for text, epochs in ((once, 10), (twice, 3)):
        assert text.count("# Measured here:") == 1
        assert f"after {epochs} epochs" in text
        kept = [line for line in text.splitlines()
                if not line.startswith(("# Measured here:", "#   "))]
        assert kept == [line for line in original.splitlines()
                        if not line.startswith(("# Measured here:", "#   "))]
        rewritten = cnnzoo.load_config(write(tmp_path / "lenet5.yaml", text))
        assert rewritten == cnnzoo.load_config(ROOT / "configs" / "lenet5.yaml")
    bare = "# yaml-language-server: $schema=x\n#\n# Origin.\nname: n\nmodel: {}\n"
    assert script.measure.rewrite_measured(bare, ["# Measured here: 1%"]) == (
        "# yaml-language-server: $schema=x\n#\n# Origin.\n# Measured here: 1%\nname: n\n"
        "model: {}\n")


def test_results_markdown(script):
    def record(params: int, macs: int, accuracy: float, **extra) -> dict:
        return {**RECORD, "params": params, "macs": macs, "test_accuracy": accuracy, **extra}

    records = {
        "lenet5": RECORD,
        "mlp": record(247_766, 247_272, 0.8850),
        "cnn-small": record(16_586, 988_672, 0.9050),
        "cnn-small-local": record(1_005_834, 988_672, 0.8900),
        "cs231n-simple": record(31_066, 362_496, 0.9120, adapted=[
            "data.dataset=fashion_mnist", "data.pad=2", "data.channels=3"]),
    }
    machine = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "torch": "2.14.1",
               "python": "3.11.9", "cnnzoo": "0.1.0"}
    text = script.report.render_markdown(records, ["cs231n-simple", "lenet5", "mlp"],
                                  {"vgg11-bn": "one epoch would take about 25m00s here"},
                                  machine, "10m00s per config", "python scripts/zoo_results.py",
                                  "accuracy-vs-params.png")
    assert ("| `lenet5` | 61,706 | 416,520 | 90.81% | 10 | 54,000 / 10,000 | 1m02s | 1m15s | "
            "2025-01-02 |") in text
    assert "| `cs231n-simple` (adapted) | 31,066 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows[:5]] == ["cs231n-simple", "lenet5", "mlp", "cnn-small",
                                                   "cnn-small-local"]
    assert "- `lenet5`: `cnnzoo train --config lenet5 --device cpu --out runs/zoo-1/lenet5`" in text
    ratio = 247_766 / 16_586
    assert f"`mlp` has {ratio:,.1f}x the parameters of `cnn-small`" in text
    assert "its test accuracy is 2.00 points lower" in text
    local = f"`cnn-small-local` has {1_005_834 / 16_586:,.1f}x the parameters"
    assert local in text and "1.00x its mult-adds; its test accuracy is 1.50 points lower" in text
    assert "| MLP 256-128-100 | 88.33% | @heitorrapela | `mlp` | 88.50% |" in text
    assert "| WRN-28-10 + random erasing | 96.30% |" in text
    assert "`cs231n-simple` (best here) | 91.20% |" in text
    assert "- `vgg11-bn`: one epoch would take about 25m00s here" in text
    assert "![test accuracy against parameters](accuracy-vs-params.png)" in text
    assert "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1, Python 3.11.9" in text
    best = "### `cs231n-simple`, the best here, per parameter"
    assert best in text
    # ResNet18 against cs231n-simple: 11,175,370 / 31,066 parameters, 94.90% vs 91.20%.
    ratio, points = 11_175_370 / 31_066, 94.90 - 91.20
    assert (f"| ResNet18, with flips, translation and rotation | 11,175,370 | torchvision's "
            f"ResNet18 with a 1-channel input and 10 outputs | {ratio:,.2f}x | 94.90% "
            f"(+{points:.2f}) | +{points / math.log10(ratio):.2f} |") in text
    empty = script.report.render_markdown({}, [], {}, machine, "none", "python x", None)
    assert "Nothing has been measured yet." in empty and "None of them" in empty


@pytest.mark.slow
def test_zoo_results_end_to_end_on_fake_files(script, tmp_path, monkeypatch):
    """One config through the whole script: a real `cnnzoo train` subprocess, then the
    report, results.json (as `cnnzoo zoo` reads it), the plot and the comment line."""
    write_mnist(tmp_path / "data", n_train=300, n_test=100)
    configs = tmp_path / "configs"
    header = "# yaml-language-server: $schema=cnnzoo.schema.json\n#\n# A test net.\n"
    write(configs / "small.yaml", header + "# Measured here: not yet measured\n" + SMALL)
    monkeypatch.setattr(script.measure, "measure_step_seconds", lambda *a, **k: 0.01)
    code = script.run.main(["--configs-dir", str(configs), "--results", str(tmp_path / "docs" /
                        "results.md"), "--runs", str(tmp_path / "runs"), "--data-root",
                        str(tmp_path / "data"), "--epochs", "1", "--budget-minutes", "5"])
    assert code == 0
    results = json.loads((tmp_path / "runs" / "small" / "results.json").read_text())
    assert results["epochs"] == 1
    accuracy = f"{results['test_accuracy']:.2%}"
    from cnnzoo.zoo.catalog import zoo_entries

    entry = next(e for e in zoo_entries(configs) if e.name == "small")
    assert entry.accuracy == results["test_accuracy"] and not entry.stale
    report = (tmp_path / "docs" / "results.md").read_text()
    assert (f"| `small` | {results['params']:,} | {results['macs']:,} | {accuracy} | 1 | "
            f"270 / 100 |") in report
    assert "--set train.epochs=1" in report
    assert_png(tmp_path / "docs" / "accuracy-vs-params.png")
    comment = (configs / "small.yaml").read_text()
    assert f"# Measured here: {accuracy} test accuracy on Fashion-MNIST, on 270 training" in comment
    assert "after 1 epoch (" in comment
    assert "not yet measured" not in comment


@pytest.mark.slow
def test_zoo_results_reuse_takes_a_finished_run_of_the_same_config_only(script, tmp_path,
                                                                         monkeypatch):
    """--reuse records a finished run of the same config without training again, and
    trains again when the config has changed since."""
    write_mnist(tmp_path / "data", n_train=300, n_test=100)
    configs = tmp_path / "configs"
    header = "# A test net.\n# Measured here: not yet measured\n"
    write(configs / "small.yaml", header + SMALL)
    monkeypatch.setattr(script.measure, "measure_step_seconds", lambda *a, **k: 0.01)
    argv = ["--configs-dir", str(configs), "--results", str(tmp_path / "results.md"),
            "--runs", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"),
            "--epochs", "1", "--budget-minutes", "5", "--reuse"]
    assert script.run.main(argv) == 0
    first = json.loads((tmp_path / "runs" / "small" / "results.json").read_text())

    calls = []
    monkeypatch.setattr(script.run.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    assert script.run.main(argv) == 0
    assert calls == []  # nothing trained: the finished run was taken
    record = json.loads((configs / "results.json").read_text())["configs"]["small"]
    assert record["test_accuracy"] == first["test_accuracy"]

    # Another learning rate: the old run no longer matches, so it is trained again
    # (here the stubbed training fails, which the script reports).
    argv += ["--set", "train.optimizer.lr=0.5"]
    assert script.run.main(argv) == 1
    assert len(calls) == 1


def test_branched_nets_are_compared_per_parameter(script):
    base = {"epochs": 3.1, "adapted": [], "train_seconds": 300.0, "wall_seconds": 420.0,
            "date": "2026-12-06", "machine": "AMD EPYC", "command": "cnnzoo train",
            "train_images": 54_000, "test_images": 10_000}
    records = {"inception-mini": {**base, "params": 95_954, "macs": 8_560_848,
                                  "test_accuracy": 0.9038},
               "densenet-mini": {**base, "params": 65_458, "macs": 7_800_000,
                                 "test_accuracy": 0.8900}}
    machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1", "python": "3.11", "cnnzoo": "0"}
    text = script.report.render_markdown(records, [], {}, machine, "none", "python x", None)
    section = text.split("## Parallel paths")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    # 89.00 points / 0.65458 hundred-thousand params = 136.0; 90.38 / 0.95954 = 94.2
    # Their configs' own 300 s budget stopped both, as in the main table.
    cell = "3.1 of 10 epochs (5m budget)"
    assert rows == [f"| `densenet-mini` | 65,458 | 7,800,000 | 89.00% | {cell} | 136.0 |",
                    f"| `inception-mini` | 95,954 | 8,560,848 | 90.38% | {cell} | 94.2 |"]
    assert "Best per parameter: `densenet-mini`; most accurate: `inception-mini`." in section
    assert "## Parallel paths" not in script.report.render_markdown(
        {"lenet5": records["densenet-mini"]}, [], {}, machine, "none", "python x", None)
