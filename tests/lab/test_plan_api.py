"""POST /api/plan and the configs: the same document as `cnnzoo summary --json` for
every bundled config, and the CLI's message and line for every broken config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.config.test_config_errors import CASES
from tests.helpers.common import CONFIGS
from tests.helpers.config_cases import write_case


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_plan_is_the_summary_json(path: Path, client, cli) -> None:
    result = cli("summary", "--json", "--config", path)
    assert result.code == 0, result.err
    answer = client.post(f"/api/plan?name={path.stem}", content=path.read_bytes())
    assert answer.status_code == 200
    assert answer.json() == json.loads(result.out)


def test_plan_lines_name_each_layer_line(client) -> None:
    text = ("model:\n  layers:\n    - input: {width: 8, height: 8, depth: 3}\n"
            "    - conv: {filters: 4, kernel: 3}\n    - residual:\n"
            "        - conv: {filters: 4, kernel: 3, padding: same}\n    - fc: 2\n")
    document = client.post("/api/plan?lines=1", content=text).json()
    lines = document.pop("lines")
    paths = {layer["path"]: layer["type"] for layer in document["layers"]}
    assert lines[next(p for p, t in paths.items() if t == "conv")] == 4
    assert lines[next(p for p, t in paths.items() if t == "residual")] == 5
    assert lines[next(p for p, t in paths.items() if t == "fc")] == 7
    nested = next(layer for layer in document["layers"] if layer["type"] == "residual")
    assert lines[nested["children"][0]["path"]] == 6


ERROR_CASES = [c for c in CASES if not c.args and isinstance(c.text, str)]
# The CLI reads a file and gives its size; the lab has text in hand: the same limit.
WORDED_AS_TEXT = {"huge_file"}


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.id for c in ERROR_CASES])
def test_config_errors_match_the_cli(case, client, cli, tmp_path: Path) -> None:
    path = write_case(case, tmp_path)
    result = cli("summary", "--config", path)
    assert result.code == 2
    expected = result.err.removeprefix("error: ").rstrip("\n").replace(str(path), "editor")
    answer = client.post(f"/api/plan?name={case.id}", content=case.text.encode())
    assert answer.status_code == 422
    error = answer.json()["error"]
    for fragment in case.fragments:
        assert fragment in error["message"]
    if case.id not in WORDED_AS_TEXT:
        assert error["message"] == expected
    if case.line is not None:
        assert error["line"] == case.line


def test_plan_refuses_a_body_far_over_the_config_limit(client) -> None:
    from cnnzoo.lab.api import MAX_PLAN_BODY

    answer = client.post("/api/plan", content=b"#" * (MAX_PLAN_BODY + 1))
    assert answer.status_code == 413
    assert "limit" in answer.json()["error"]["message"]


def test_plan_refuses_text_that_is_not_utf8(client) -> None:
    answer = client.post("/api/plan", content=b"model: \xff\n")
    assert answer.status_code == 422
    assert "UTF-8" in answer.json()["error"]["message"]


def test_plan_counts_layers_after_expansion(client) -> None:
    text = ("model:\n  layers:\n    - input: {width: 4, height: 4, depth: 1}\n"
            "    - repeat: {times: 1000, layers: [{repeat: {times: 1000, layers: [relu]}}]}\n")
    answer = client.post("/api/plan", content=text)
    assert answer.status_code == 422
    message = answer.json()["error"]["message"]
    assert "1,001,002 layers once every repeat is expanded; at most 10,000" in message


def test_configs_list_and_text(client) -> None:
    from cnnzoo.zoo.catalog import zoo_entries

    listed = client.get("/api/configs").json()
    assert [c["name"] for c in listed] == [e.name for e in zoo_entries()]
    lenet = next(c for c in listed if c["name"] == "lenet5")
    assert lenet["params"] == 61_706 and lenet["dataset"] == "fashion_mnist"
    text = client.get("/api/configs/lenet5").json()["yaml"]
    assert text == next(p for p in CONFIGS if p.stem == "lenet5").read_text()
    missing = client.get("/api/configs/lenet")
    assert missing.status_code == 404 and "lenet" in missing.json()["error"]["message"]


def test_schema_is_the_cli_schema(client, cli) -> None:
    assert client.get("/api/schema").json() == json.loads(cli("schema").out)
