"""`cnnzoo compare` end to end on runs trained on fake files: the table, the plot,
patterns, unfinished runs, and what is not a run."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers.runs import assert_png


def test_compare_table_and_plot(trained, cli, tmp_path):
    plot = tmp_path / "cmp.png"
    result = cli("compare", trained["small"], trained["dense"], "--plot", plot)
    assert result.code == 0, result.err
    for name in ("small", "dense"):
        results = json.loads((trained[name] / "results.json").read_text())
        row = next(line for line in result.out.splitlines() if line.startswith(name + " "))
        assert f"{results['params']:,}" in row and f"{results['macs']:,}" in row
        assert f"{results['test_accuracy']:.2%}" in row and results["device"] in row
    assert f"plot: {plot}" in result.out
    assert_png(plot, (1000, 650))


def test_compare_expands_a_quoted_pattern(trained, cli, tmp_path):
    pattern = str(trained["base"] / "runs" / "*")
    result = cli("compare", pattern, "--json", "--no-plot")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert sorted(r["name"] for r in data["runs"]) == ["dense", "small"]
    assert data["plot"] is None


def test_compare_shows_an_unfinished_run(trained, cli, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained["small"], unfinished)
    (unfinished / "results.json").unlink()
    result = cli("compare", trained["small"], unfinished, "--json", "--plot", tmp_path / "p.png")
    assert result.code == 0, result.err
    runs = json.loads(result.out)["runs"]
    assert [r["label"] for r in runs] == ["small", "unfinished"]  # same name: the folders
    assert runs[1]["test_accuracy"] is None and runs[1]["params"] == runs[0]["params"]
    assert_png(tmp_path / "p.png")


@pytest.mark.parametrize(("target", "message"), [
    ("nowhere", "no run directory"),
    ("data", "is not a cnnzoo run"),
    ("data/*", "no cnnzoo runs match"),
    ("nothing-*", "no cnnzoo runs match"),
])
def test_compare_refuses_what_is_not_a_run(trained, cli, tmp_path, monkeypatch, target, message):
    monkeypatch.chdir(tmp_path)
    result = cli("compare", trained["small"], str(trained["base"] / target))
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "compare.png").exists()
