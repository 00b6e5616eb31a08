"""`cnnzoo zoo`: every bundled config with its measured, stale or missing result, and
the one `# Measured here:` line in each config's header."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import cnnzoo
from tests.helpers.common import CONFIGS, ROOT


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_header_has_one_measured_line(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert sum(line.startswith("# Measured here:") for line in header) == 1
    assert "# Measured here:" not in "\n".join(path.read_text().splitlines()[len(header):])


def test_zoo_lists_every_bundled_config(cli):
    result = cli("zoo", "--json")
    assert result.code == 0, result.err
    listed = {e["name"]: e for e in json.loads(result.out)}
    assert set(listed) == {p.stem for p in CONFIGS}
    for path in CONFIGS:
        plan = cnnzoo.plan_experiment(cnnzoo.load_config(path))
        assert (listed[path.stem]["params"], listed[path.stem]["macs"]) == (
            plan.total_params, plan.total_macs)
    table = cli("zoo")
    assert table.code == 0 and "61,706" in table.out and "resnet20" in table.out


@pytest.fixture
def bundled_copy(tmp_path, monkeypatch) -> Path:
    """Four bundled configs in a folder that stands in for the installed ones."""
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in ("lenet5", "mlp", "cs231n-simple", "resnet-small"):
        shutil.copy(ROOT / "configs" / f"{name}.yaml", folder)
    monkeypatch.setattr("cnnzoo.config.bundled.BUNDLED_DIRS", (folder,))
    return folder


def test_zoo_shows_measured_stale_and_missing_results(cli, bundled_copy):
    lenet = cnnzoo.plan_experiment(cnnzoo.load_config(bundled_copy / "lenet5.yaml"))
    simple = cnnzoo.plan_experiment(cnnzoo.load_config(bundled_copy / "cs231n-simple.yaml"))
    from cnnzoo.config.bundled import write_measured

    write_measured({
        "lenet5": {"test_accuracy": 0.9081, "params": lenet.total_params,
                   "macs": lenet.total_macs, "dataset": "fashion_mnist", "epochs": 10,
                   "date": "2025-01-02"},
        "mlp": {"test_accuracy": 0.88, "params": 1, "macs": 1, "dataset": "fashion_mnist"},
        "cs231n-simple": {"test_accuracy": 0.5, "params": simple.total_params,
                          "macs": simple.total_macs, "dataset": "fashion_mnist", "epochs": 1,
                          "adapted": ["data.pad=2"], "train_images": 1_800},
    }, bundled_copy)
    result = cli("zoo")
    assert result.code == 0, result.err
    rows = {line.split()[0]: line for line in result.out.splitlines()[1:]}
    assert set(rows) == {"lenet5", "mlp", "cs231n-simple", "resnet-small"}
    assert "90.81%" in rows["lenet5"] and "fashion_mnist, 10 epochs, 2025-01-02" in rows["lenet5"]
    assert "stale" in rows["mlp"] and "88.00%" not in rows["mlp"]
    assert "50.00%  fashion_mnist (adapted), 1 epoch, 1,800 training images" in rows[
        "cs231n-simple"]
    assert "not yet measured" in rows["resnet-small"]
    data = {e["name"]: e for e in json.loads(cli("zoo", "--json").out)}
    assert data["lenet5"]["test_accuracy"] == 0.9081 and data["mlp"]["test_accuracy"] is None


def test_zoo_with_a_damaged_results_file_is_one_clear_error(cli, bundled_copy):
    (bundled_copy / "results.json").write_text("{not json")
    result = cli("zoo")
    assert result.code == 2
    assert "cannot read the measured results" in result.err and "Traceback" not in result.err


def test_docs_zoo_table_is_what_cnnzoo_zoo_prints_for_the_shipped_weights(cli):
    """docs/zoo.md's table of the configs with weights is `cnnzoo zoo`'s own lines:
    re-measuring a config without updating the page fails here."""
    text = (ROOT / "docs" / "zoo.md").read_text()
    section = text.split("## Which one: accuracy with error bars", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    printed = cli("zoo")
    assert printed.code == 0, printed.err
    lines = {line.rstrip() for line in printed.out.splitlines()}
    assert block and all(line in lines for line in block), "run `cnnzoo zoo` and copy its lines"
    shipped = {p.stem for p in (ROOT / "configs" / "weights").glob("*.safetensors")}
    assert {line.split()[0] for line in block[1:]} == shipped
    assert any("+- " in line and line.endswith("seed 0") for line in block)
