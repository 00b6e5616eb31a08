"""Every safety rule of the lab: its own Host only (DNS rebinding), no state change
from a foreign Origin, a token off loopback, run names and files confined to the
runs folder, size caps, and errors as JSON, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnnzoo.errors import CnnzooError
from cnnzoo.lab.safety import Guard
from cnnzoo.lab.server import check_bind
from tests.lab.conftest import PORT


@pytest.mark.parametrize("host", ["evil.example:8765", "127.0.0.1:9999", "localhost.evil:8765",
                                  "", "127.0.0.1"])
def test_a_foreign_host_is_refused(make_client, host: str) -> None:
    client = make_client()
    answer = client.get("/api/runs", headers={"Host": host})
    assert answer.status_code == 403
    assert "Host" in answer.json()["error"]["message"]


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"[::1]:{PORT}"])
def test_the_server_own_names_are_served(make_client, host: str) -> None:
    assert make_client().get("/api/runs", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example", f"http://localhost:{PORT + 1}",
                                    "null"])
def test_a_state_change_from_a_foreign_origin_is_refused(client, origin: str) -> None:
    for path in ("/api/plan", "/api/runs", "/api/runs/x/stop", "/api/predict"):
        answer = client.post(path, content=b"{}", headers={"Origin": origin})
        assert answer.status_code == 403, path
        assert "may not change" in answer.json()["error"]["message"]


def test_the_page_own_origin_may_change_things(client) -> None:
    text = "model:\n  layers:\n    - input: {width: 4, height: 4, depth: 1}\n    - fc: 2\n"
    answer = client.post("/api/plan", content=text, headers={"Origin": f"http://127.0.0.1:{PORT}"})
    assert answer.status_code == 200


def test_off_loopback_every_request_needs_the_token(make_client) -> None:
    client = make_client(token="s3cret", host="0.0.0.0", base_url=f"http://10.1.2.3:{PORT}")
    for path in ("/", "/api/runs", "/static/lab.js", "/api/configs/lenet5"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert "token" in answer.json()["error"]["message"]
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = client.get("/?token=s3cret")  # the printed URL: the page, and a cookie for it
    assert first.status_code == 200 and "cnnzoo lab" in first.text
    assert "HttpOnly" in first.headers["set-cookie"]
    assert client.get("/api/runs").status_code == 200  # the cookie now travels


def test_binding_beyond_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(CnnzooError, match="needs a token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "t")
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)


def test_the_guard_knows_loopback_from_the_rest() -> None:
    assert Guard("127.0.0.1", 1).own_hosts == {"localhost:1", "127.0.0.1:1", "[::1]:1"}
    assert Guard("10.0.0.1", 1, "t").own_hosts == {"10.0.0.1:1"}


@pytest.mark.parametrize("name", ["..", ".lab", "..%2F..%2Fetc", "%2Fetc", "a%5Cb", "x%00y"])
def test_run_names_cannot_leave_the_runs_folder(client, name: str) -> None:
    answer = client.get(f"/api/runs/{name}")
    assert answer.status_code in (400, 404, 422)
    assert "error" in answer.json()


def test_a_link_out_of_the_runs_folder_is_not_a_run(client, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "config.yaml").write_text("name: x\n")
    (tmp_path / "runs").mkdir()
    os.symlink(outside / "secret", tmp_path / "runs" / "linked")
    assert client.get("/api/runs").json() == []
    assert client.get("/api/runs/linked").status_code == 404
    assert client.get("/api/runs/linked/files/curves.png").status_code == 404


def test_run_files_are_pictures_inside_the_run(client, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: r\n")
    (run / "curves.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "runs" / "secret.png").write_bytes(b"\x89PNG secret")
    os.symlink(tmp_path / "runs" / "secret.png", run / "linked.png")
    assert client.get("/api/runs/r/files/curves.png").content == b"\x89PNG fake"
    for name in ("config.yaml", "..%2Fsecret.png", "linked.png", ".hidden.png", "none.png"):
        assert client.get(f"/api/runs/r/files/{name}").status_code == 404, name


def test_a_run_body_over_its_cap_is_refused(client) -> None:
    from cnnzoo.lab.api import MAX_RUN_BODY

    answer = client.post("/api/runs", content=b" " * (MAX_RUN_BODY + 1))
    assert answer.status_code == 413


def test_an_image_over_its_cap_is_refused(client) -> None:
    from cnnzoo.lab.api import MAX_IMAGE_BYTES

    image = b"0" * (MAX_IMAGE_BYTES + (1 << 17))
    answer = client.post("/api/predict", files={"image": ("big.png", image)},
                         data={"pretrained": "lenet5"})
    assert answer.status_code == 413


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"yaml": 3}',
                                  b'{"yaml": "x", "set": "a=1"}', b'{"yaml": "x", "name": 3}',
                                  b'{"yaml": "x", "config": []}'])
def test_a_malformed_run_request_is_one_json_error(client, body: bytes) -> None:
    answer = client.post("/api/runs", content=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"]


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "x" * 200])
def test_a_run_name_must_be_one_folder_name(client, name: str) -> None:
    text = "model:\n  layers:\n    - input: {width: 4, height: 4, depth: 1}\n    - fc: 2\n"
    answer = client.post("/api/runs", json={"yaml": text, "name": name})
    assert answer.status_code == 422
    assert "folder name" in answer.json()["error"]["message"]


def test_unknown_paths_and_methods_are_json(client) -> None:
    assert client.get("/api/nothing").json() == {"error": {"message": "Not Found"}}
    answer = client.delete("/api/runs")
    assert answer.status_code == 405 and "error" in answer.json()


def test_a_bug_is_a_json_500_without_a_traceback(client, monkeypatch) -> None:
    from cnnzoo.lab import runs

    monkeypatch.setattr(runs.RunManager, "names", lambda self: 1 / 0)
    answer = client.get("/api/runs")
    assert answer.status_code == 500
    assert answer.json()["error"]["message"].startswith("internal error: ZeroDivisionError")
    assert "Traceback" not in answer.text
