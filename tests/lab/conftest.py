"""The lab's fixtures: an app on a folder of runs, its test client, fake Fashion-MNIST
files and a tiny config that trains on them in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.datafiles import write_mnist

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"


def tiny_config(data: Path, epochs: int = 2, name: str = "tiny") -> str:
    """A conv net on fake Fashion-MNIST files: 16 steps an epoch, a few seconds a run."""
    return f"""name: {name}
model:
  layers:
    - input: {{width: 28, height: 28, depth: 1}}
    - conv: {{filters: 8, kernel: 3, padding: same, activation: relu}}
    - pool: 4
    - fc: 10
data: {{dataset: fashion_mnist, root: {data}, download: false, val_split: 0.1}}
train: {{epochs: {epochs}, batch_size: 32, device: cpu, seed: 3,
        optimizer: {{name: adam, lr: 0.01}}}}
"""


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labdata")
    write_mnist(root)
    return root


@pytest.fixture
def make_client(tmp_path: Path):
    """A factory of test clients on a lab over tmp_path/runs, with a Guard of choice."""
    from starlette.testclient import TestClient

    from cnnzoo.lab.safety import Guard
    from cnnzoo.lab.server import create_app

    apps = []

    def make(token: str | None = None, host: str = "127.0.0.1",
             base_url: str = BASE) -> TestClient:
        app = create_app(tmp_path / "runs", Guard(host, PORT, token))
        apps.append(app)
        return TestClient(app, base_url=base_url, raise_server_exceptions=False)

    yield make
    for app in apps:
        app.state.runs.close()


@pytest.fixture
def client(make_client):
    return make_client()
