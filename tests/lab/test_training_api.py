"""Training through the API: a real `cnnzoo train` process per run, its events read
from what it writes, stop and resume, and the run lock shared with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.runs import rundir
from cnnzoo.runs.lock import lock_run, release
from tests.lab.conftest import tiny_config


def events(client, run: str) -> list[tuple[str, dict]]:
    """Every event of the run's stream, until its `end`."""
    found, name = [], None
    with client.stream("GET", f"/api/runs/{run}/events") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                found.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    return found


def until_first_epoch(client, run: str) -> None:
    with client.stream("GET", f"/api/runs/{run}/events") as answer:
        for line in answer.iter_lines():
            if line == "event: epoch" or line == "event: end":
                return


@pytest.mark.slow
def test_a_training_streams_epochs_then_its_end(client, fake_data: Path, tmp_path: Path) -> None:
    answer = client.post("/api/runs", json={"yaml": tiny_config(fake_data), "name": "first"})
    assert answer.status_code == 201 and answer.json() == {"run": "first"}
    again = client.post("/api/runs", json={"yaml": tiny_config(fake_data), "name": "first"})
    assert again.status_code == 409  # live
    stream = events(client, "first")
    kinds = [kind for kind, _ in stream]
    assert kinds[-1] == "end" and stream[-1][1] == {"status": "finished", "message": None}
    assert "progress" in kinds
    epochs = [data for kind, data in stream if kind == "epoch"]
    assert epochs == rundir.read_metrics(tmp_path / "runs" / "first")
    assert [(r["epoch"], r["split"]) for r in epochs][:4] == [
        ("1", "train"), ("1", "val"), ("2", "train"), ("2", "val")]
    progress = next(data for kind, data in stream if kind == "progress" and data["epoch"])
    assert progress["epochs"] == 2 and progress["steps"] == 540 // 32  # whole batches
    late = events(client, "first")  # a client that comes after the end gets it all
    assert [d for k, d in late if k == "epoch"] == epochs and late[-1][0] == "end"
    listed = client.get("/api/runs").json()
    assert [(r["run"], r["status"], r["config"]) for r in listed] == [
        ("first", "finished", "tiny")]
    results = json.loads((tmp_path / "runs" / "first" / rundir.RESULTS).read_text())
    assert listed[0]["test_accuracy"] == results["test_accuracy"]
    detail = client.get("/api/runs/first").json()
    assert detail["metrics"] == rundir.read_metrics(tmp_path / "runs" / "first")
    assert "curves.png" in detail["pictures"]
    picture = client.get("/api/runs/first/files/curves.png")
    assert picture.content.startswith(b"\x89PNG")
    taken = client.post("/api/runs", json={"yaml": tiny_config(fake_data), "name": "first"})
    assert taken.status_code == 409 and "already exists" in taken.json()["error"]["message"]


@pytest.mark.slow
def test_stop_then_resume_ends_where_an_uninterrupted_run_ends(client, cli, fake_data: Path,
                                                               tmp_path: Path) -> None:
    text = tiny_config(fake_data, epochs=3)
    assert client.post("/api/runs", json={"yaml": text, "name": "paused"}).status_code == 201
    until_first_epoch(client, "paused")
    assert client.post("/api/runs/paused/stop").status_code == 202
    ended = events(client, "paused")[-1]
    assert ended == ("end", {"status": "stopped", "message": None})
    assert client.get("/api/runs/paused").json()["status"] == "stopped"
    assert client.post("/api/runs/paused/stop").status_code == 409  # not running
    assert client.post("/api/runs/paused/resume").status_code == 202
    assert events(client, "paused")[-1] == ("end", {"status": "finished", "message": None})
    config = tmp_path / "tiny.yaml"
    config.write_text(text)
    whole = tmp_path / "whole"
    assert cli("train", "--config", config, "--out", whole, "--quiet").code == 0
    paused = tmp_path / "runs" / "paused"

    def numbers(run: Path) -> list[tuple]:
        return [(r["epoch"], r["split"], r["loss"], r["accuracy"])
                for r in rundir.read_metrics(run)]

    assert numbers(paused) == numbers(whole)
    stopped, uninterrupted = (load_file(run / rundir.WEIGHTS) for run in (paused, whole))
    assert stopped.keys() == uninterrupted.keys()
    assert all(torch.equal(stopped[k], uninterrupted[k]) for k in stopped)
    assert client.post("/api/runs/paused/resume").status_code == 409  # finished


def test_a_run_the_cli_trains_into_is_refused(client, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "busy"
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text("name: busy\n")
    (run / rundir.STATE).write_bytes(b"")
    lock = lock_run(run)  # as `cnnzoo train` holds it while it trains
    try:
        text = "model:\n  layers:\n    - input: {width: 4, height: 4, depth: 1}\n    - fc: 2\n"
        for answer in (client.post("/api/runs", json={"yaml": text, "name": "busy"}),
                       client.post("/api/runs/busy/resume")):
            assert answer.status_code == 409
            assert "is training into it" in answer.json()["error"]["message"]
        assert client.get("/api/runs/busy").json()["status"] == "running"
        stop = client.post("/api/runs/busy/stop")
        assert stop.status_code == 409 and "outside this lab" in stop.json()["error"]["message"]
    finally:
        release(lock)
    assert client.get("/api/runs/busy").json()["status"] == "stopped"


def test_a_config_error_starts_nothing(client, tmp_path: Path) -> None:
    text = "model:\n  layers:\n    - input: {width: 4, height: 4, depth: 1}\n    - pool: 8\n"
    answer = client.post("/api/runs", json={"yaml": text})
    assert answer.status_code == 422
    assert answer.json()["error"]["line"] == 4
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


@pytest.mark.slow
def test_a_failed_training_ends_with_its_message(client, fake_data: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-images"
    text = tiny_config(fake_data).replace(
        f"dataset: fashion_mnist, root: {fake_data}", f"dataset: folder, root: {missing}")
    assert client.post("/api/runs", json={"yaml": text, "name": "nodata"}).status_code == 201
    kind, end = events(client, "nodata")[-1]
    assert kind == "end" and end["status"] == "failed"
    assert str(missing) in end["message"] and "Traceback" not in end["message"]
    assert client.get("/api/runs/nodata").json()["status"] == "failed"


def test_a_missing_run_is_404(client) -> None:
    for answer in (client.get("/api/runs/none"), client.get("/api/runs/none/events"),
                   client.post("/api/runs/none/resume")):
        assert answer.status_code == 404
        assert "no run named 'none'" in answer.json()["error"]["message"]
