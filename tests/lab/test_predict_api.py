"""POST /api/predict answers as `cnnzoo predict --json` does, for a run and for a
bundled pretrained net; the activations are `cnnzoo viz`'s picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.runs import assert_png, image_file


@pytest.fixture
def lab_on_trained(trained: dict[str, Path], make_client):
    """A lab whose runs folder holds the two trained runs (small, dense)."""
    from starlette.testclient import TestClient

    from cnnzoo.lab.safety import Guard
    from cnnzoo.lab.server import create_app
    from tests.lab.conftest import BASE, PORT

    app = create_app(trained["base"] / "runs", Guard("127.0.0.1", PORT))
    return TestClient(app, base_url=BASE, raise_server_exceptions=False)


def cli_answer(cli, *args) -> list[dict]:
    result = cli("predict", "--json", *args)
    assert result.code == 0, result.err
    return json.loads(result.out)


def same_top(got: list[dict], expected: list[dict]) -> None:
    """The same classes in the same order, with the same probabilities (or scores)."""
    assert [(g["class"], g["index"]) for g in got] == [(g["class"], g["index"]) for g in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.keys() == theirs.keys()
        key = "probability" if "probability" in theirs else "score"
        assert mine[key] == pytest.approx(theirs[key], abs=1e-6)


@pytest.mark.parametrize("run", ["small", "dense"])
def test_predict_on_a_run_matches_the_cli(lab_on_trained, trained, cli, tmp_path: Path,
                                          run: str) -> None:
    image = image_file(tmp_path, label=3)
    expected = cli_answer(cli, trained[run], image, "--top", "4")
    answer = lab_on_trained.post("/api/predict", data={"run": run, "top": "4"},
                                 files={"image": (image.name, image.read_bytes(), "image/png")})
    assert answer.status_code == 200
    got = answer.json()
    assert got[0]["image"] == image.name
    same_top(got[0]["top"], expected[0]["top"])


def test_predict_with_a_pretrained_net_matches_the_cli(client, cli, tmp_path: Path) -> None:
    from cnnzoo.zoo.catalog import pretrained_record, zoo_entries

    name = next(e.name for e in zoo_entries() if pretrained_record(e))
    image = image_file(tmp_path, label=5)
    expected = cli_answer(cli, "--pretrained", name, image)
    answer = client.post("/api/predict", data={"pretrained": name},
                         files={"image": ("shoe.png", image.read_bytes())})
    assert answer.status_code == 200
    same_top(answer.json()[0]["top"], expected[0]["top"])


def test_an_unreadable_image_is_422_with_the_reader_message(lab_on_trained) -> None:
    answer = lab_on_trained.post("/api/predict", data={"run": "small"},
                                 files={"image": ("notes.png", b"not an image at all")})
    assert answer.status_code == 422
    message = answer.json()["error"]["message"]
    assert "notes.png" in message and "not an image format" in message


@pytest.mark.parametrize("data", [{}, {"run": "small", "pretrained": "lenet5"},
                                  {"run": "small", "top": "0"}, {"run": "small", "top": "x"}])
def test_a_malformed_predict_request_is_400(lab_on_trained, tmp_path: Path, data) -> None:
    image = image_file(tmp_path)
    answer = lab_on_trained.post("/api/predict", data=data,
                                 files={"image": ("a.png", image.read_bytes())})
    assert answer.status_code == 400 and answer.json()["error"]["message"]


def test_predict_needs_an_image_field(lab_on_trained) -> None:
    answer = lab_on_trained.post("/api/predict", data={"run": "small"})
    assert answer.status_code == 400 and "'image'" in answer.json()["error"]["message"]


def test_predict_on_a_missing_run_or_config_is_404(lab_on_trained, tmp_path: Path) -> None:
    image = image_file(tmp_path).read_bytes()
    for data in ({"run": "nothing"}, {"pretrained": "nothing"}):
        answer = lab_on_trained.post("/api/predict", data=data, files={"image": ("a.png", image)})
        assert answer.status_code == 404, data


def test_activations_are_the_viz_picture(lab_on_trained, tmp_path: Path) -> None:
    image = image_file(tmp_path)
    answer = lab_on_trained.post("/api/runs/small/activations",
                                 files={"image": ("a.png", image.read_bytes())})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    picture = tmp_path / "activations.png"
    picture.write_bytes(answer.content)
    assert_png(picture)
