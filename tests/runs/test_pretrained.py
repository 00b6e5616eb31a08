"""Pretrained weights: packing a finished run, the shipped files against their records,
using them (eval, predict, viz, build_model), weights from a URL, and fine-tuning."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.config.bundled import read_measured, write_measured
from cnnzoo.runs import rundir
from cnnzoo.runs.initfrom import initialise_from
from cnnzoo.runs.load import load_run_model
from cnnzoo.runs.packed import PACKED_FORMAT
from cnnzoo.runs.pretrained import open_packed
from cnnzoo.runs.publish import pack_for_zoo, pack_run
from cnnzoo.training.trainer import fit
from tests.helpers.common import ROOT, write
from tests.helpers.datafiles import class_images, write_mnist

# A fixed (frozen) kernel and a batchnorm: what a packed file must leave out and keep.
SMALL = """
name: small
model:
  layers:
    - conv: {filters: 2, kernel: 3, padding: same, weights: sobel_x}
    - conv: {filters: 8, kernel: 3, padding: same, activation: relu}
    - batchnorm
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1}
train:
  epochs: 1
  batch_size: 32
  optimizer: {name: adam, lr: 0.01}
"""


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fake_mnist) -> Path:
    base = tmp_path_factory.mktemp("runs")
    config = cnnzoo.load_config(write(base / "small.yaml", SMALL))
    fit(config, out=base / "small", data_root=str(fake_mnist), device="cpu",
        show_progress=False)
    return base / "small"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))


def bundled_with(monkeypatch, directory: Path) -> None:
    """Make `directory` the bundled configs (with its results.json and weights/)."""
    monkeypatch.setattr("cnnzoo.config.bundled.BUNDLED_DIRS", (directory,))


def no_bundled_weights(monkeypatch, tmp_path: Path) -> None:
    """Bundled configs whose records have no weights, whatever the checkout ships."""
    directory = tmp_path / "bundled"
    directory.mkdir()
    shutil.copy(ROOT / "configs" / "lenet5.yaml", directory / "lenet5.yaml")
    write_measured({"lenet5": {"test_accuracy": 0.9, "params": 0, "macs": 0}}, directory)
    bundled_with(monkeypatch, directory)


def zoo_with_weights(tmp_path: Path, run: Path) -> tuple[Path, dict]:
    """A bundled-configs folder holding `small` and its packed weights, as
    scripts/zoo_results.py leaves it."""
    directory = tmp_path / "bundled"
    directory.mkdir()
    shutil.copy(run / "config.yaml", directory / "small.yaml")
    record = {"test_accuracy": json.loads((run / "results.json").read_text())["test_accuracy"],
              "command": "cnnzoo train --config small", "machine": "test machine",
              "date": "2026-12-01"}
    record["pretrained"] = pack_for_zoo(run, [], directory, record)
    write_measured({"small": record}, directory)
    return directory, record


def test_the_zoo_does_not_ship_weights_over_the_size_limit(tmp_path, trained_run,
                                                          monkeypatch, capsys):
    import cnnzoo.runs.publish as publish

    record = {"command": "c", "machine": "m", "date": "d"}
    kept = pack_for_zoo(trained_run, [], tmp_path, record)
    assert kept is not None and (tmp_path / kept["file"]).exists()
    monkeypatch.setattr(publish, "MAX_SHIPPED_BYTES", kept["bytes"] - 1)
    assert pack_for_zoo(trained_run, [], tmp_path, record) is None
    assert not (tmp_path / kept["file"]).exists()  # neither written nor left behind
    assert "weights not shipped" in capsys.readouterr().out


def test_pack_keeps_only_what_the_config_cannot_rebuild(tmp_path, trained_run):
    record = pack_run(trained_run, tmp_path / "weights", command="c", machine="m", date="d")
    path = tmp_path / record["file"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["bytes"] == path.stat().st_size
    results = json.loads((trained_run / "results.json").read_text())
    assert record["test_accuracy"] == results["test_accuracy"]
    assert (record["command"], record["machine"], record["date"]) == ("c", "m", "d")
    packed = open_packed(str(path))
    model = load_run_model(rundir.open_run(trained_run), torch.device("cpu"))
    learned = {n for n, p in model.named_parameters() if p.requires_grad}
    statistics = {n for n, _ in model.named_buffers() if not n.endswith("num_batches_tracked")}
    assert set(packed.tensors) == learned | statistics
    assert "layers.1.weight" not in packed.tensors  # the sobel kernel, rebuilt by the config
    assert all(t.dtype == torch.float32 for t in packed.tensors.values())
    assert packed.info["classes"][7] == "Sneaker"


def test_pretrained_module_computes_what_the_run_does(tmp_path, trained_run):
    record = pack_run(trained_run, tmp_path / "weights")
    run_model = load_run_model(rundir.open_run(trained_run), torch.device("cpu"))
    model = cnnzoo.build_model(trained_run / "config.yaml",
                               pretrained=str(tmp_path / record["file"]))
    assert not model.training
    ours, theirs = model.state_dict(), run_model.state_dict()
    assert set(ours) == set(theirs)
    for name in ours:
        if not name.endswith("num_batches_tracked"):  # not packed; unused in eval mode
            assert torch.equal(ours[name], theirs[name].contiguous()), name
    run_model.to(memory_format=torch.contiguous_format)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), run_model(x))


def test_bundled_name_eval_predict_viz(tmp_path, trained_run, fake_mnist, cli, monkeypatch):
    directory, record = zoo_with_weights(tmp_path, trained_run)
    bundled_with(monkeypatch, directory)
    listed = json.loads(cli("zoo", "--json").out)
    assert listed[0]["pretrained"] == record["pretrained"]
    assert cli("zoo").out.splitlines()[1].endswith(" yes")
    model = cnnzoo.build_model("small", pretrained=True)
    assert isinstance(model, cnnzoo.Network) and not model.training

    ours = cli("eval", "small", "--pretrained", "--json", "--data-root", fake_mnist)
    theirs = cli("eval", trained_run, "--json", "--data-root", fake_mnist)
    assert ours.code == 0, ours.err
    ours_data, theirs_data = json.loads(ours.out), json.loads(theirs.out)
    assert ours_data.pop("run") == "small" and theirs_data.pop("run") == str(trained_run)
    assert ours_data == theirs_data
    assert ours_data["accuracy"] == pytest.approx(record["pretrained"]["test_accuracy"])

    from PIL import Image

    image = class_images(np.array([7]), 28, 1, seed=5)[0, :, :, 0]
    Image.fromarray(image).save(tmp_path / "seven.png")
    predicted = cli("predict", "small", "--pretrained", tmp_path / "seven.png", "--json")
    assert predicted.code == 0, predicted.err
    assert json.loads(predicted.out)[0]["top"][0]["class"] == "Sneaker"
    monkeypatch.chdir(tmp_path)
    drawn = cli("viz", "small", "--pretrained", "--image", tmp_path / "seven.png")
    assert drawn.code == 0, drawn.err
    assert (tmp_path / "activations-small-seven.png").is_file()


def test_a_damaged_shipped_file_is_refused_before_loading(tmp_path, trained_run, cli,
                                                          monkeypatch):
    directory, record = zoo_with_weights(tmp_path, trained_run)
    bundled_with(monkeypatch, directory)
    path = directory / record["pretrained"]["file"]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    result = cli("eval", "small", "--pretrained")
    assert result.code == 2 and "corrupt weights file" in result.err
    assert record["pretrained"]["sha256"] in result.err
    assert not (tmp_path / "cache").exists()  # nothing unpacked
    with pytest.raises(cnnzoo.CnnzooError, match="corrupt"):
        cnnzoo.build_model("small", pretrained=True)


def test_pretrained_for_a_config_without_weights(tmp_path, cli, monkeypatch):
    no_bundled_weights(monkeypatch, tmp_path)
    result = cli("eval", "lenet5", "--pretrained")
    assert result.code == 2 and "lenet5 has no pretrained weights" in result.err


def test_shipped_weights_match_their_records():
    """Every record of configs/results.json against its file, and every file in
    configs/weights/ against a record; with none shipped, every record says null."""
    measured = read_measured(ROOT / "configs")
    records = {name: r.get("pretrained") for name, r in measured.items()}
    shipped = sorted((ROOT / "configs" / "weights").glob("*.safetensors"))
    assert sorted(p.name for p in shipped) == sorted(
        Path(r["file"]).name for r in records.values() if r)
    for name, record in records.items():
        if record is None:
            continue
        path = ROOT / "configs" / record["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"], name
        packed = open_packed(str(path))
        assert packed.config.name == name
        assert packed.test_accuracy == record["test_accuracy"]
        if record["command"] == measured[name]["command"]:  # the zoo's measured run itself
            assert record["test_accuracy"] == measured[name]["test_accuracy"]
        assert {"command", "date", "machine"} <= set(record)
    if not shipped:
        assert all(record is None for record in records.values())


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; counts the requests."""
    served = tmp_path / "served"
    served.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, hits
    httpd.shutdown()
    httpd.server_close()


def test_weights_from_a_url_are_downloaded_once_and_checked(tmp_path, trained_run, server,
                                                            cli):
    base, served, hits = server
    record = pack_run(trained_run, served)
    url = f"{base}/small.safetensors#sha256={record['sha256']}"
    first = cnnzoo.build_model(trained_run / "config.yaml", pretrained=url)
    second = cnnzoo.build_model(trained_run / "config.yaml", pretrained=url)
    assert len(hits) == 1
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    assert open_packed(url).sha256 == record["sha256"]

    wrong = f"{base}/small.safetensors#sha256={'0' * 64}"
    result = cli("eval", wrong, "--pretrained")
    assert result.code == 2 and "corrupt download" in result.err
    assert list((tmp_path / "cache" / "downloads").iterdir()) == [
        next((tmp_path / "cache" / "downloads").glob(f"{record['sha256'][:16]}-*"))]
    no_hash = cli("eval", f"{base}/small.safetensors", "--pretrained")
    assert no_hash.code == 2 and "has no SHA-256" in no_hash.err
    remote = cli("eval", f"http://example.com/w.safetensors#sha256={'0' * 64}", "--pretrained")
    assert remote.code == 2 and "https://" in remote.err


def test_init_from_loads_what_matches_and_names_the_rest(tmp_path, trained_run, capsys):
    other = SMALL.replace("- fc: 10", "- fc: 16\n    - fc: 10")
    model = cnnzoo.build_model(cnnzoo.parse_config(other))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = initialise_from(model, str(trained_run))
    line = capsys.readouterr().out
    trained = load_run_model(rundir.open_run(trained_run), torch.device("cpu")).state_dict()
    state = model.state_dict()
    for name in ("layers.2.weight", "layers.4.running_mean"):
        assert name in report.loaded and torch.equal(state[name], trained[name].float())
    # the trained fc 10 sat at layers.6; here layers.6 is fc 16: left at initialisation
    assert torch.equal(state["layers.6.weight"], before["layers.6.weight"])
    assert any(k.startswith("layers.6.weight (weights [10, 392], model [16, 392])")
               for k in report.kept)
    assert "layers.7.weight (not in the weights)" in report.kept
    assert "loaded" in line and "layers.6.weight" in line


@pytest.mark.slow
def test_train_init_from_a_run(tmp_path, trained_run, fake_mnist, cli):
    config = write(tmp_path / "again.yaml", SMALL.replace("name: small", "name: again"))
    result = cli("train", "--config", config, "--init-from", trained_run, "--data-root",
                 fake_mnist, "--out", tmp_path / "again", "--quiet")
    assert result.code == 0, result.err
    assert f"init from {trained_run}: loaded" in result.out
    assert "left at initialisation: nothing" in result.out


def test_init_from_matching_nothing_is_refused(tmp_path, trained_run, fake_mnist, cli):
    config = write(tmp_path / "mlp.yaml", "model:\n  layers:\n    - flatten\n    - fc: 10\n"
                   "data: {dataset: fashion_mnist}\n")
    out = tmp_path / "run"
    result = cli("train", "--config", config, "--init-from", trained_run, "--data-root",
                 fake_mnist, "--out", out)
    assert result.code == 2 and "no layer of mlp matches the weights" in result.err
    assert not out.exists()


def test_packed_format_is_refused_as_a_run_weights_file(tmp_path, trained_run, cli):
    result = cli("eval", trained_run / "model.safetensors", "--pretrained")
    assert result.code == 2 and PACKED_FORMAT in result.err


def test_eval_uses_the_precision_the_run_was_tested_in():
    """`auto` may choose differently on another CPU; a run's own choice is repeated."""
    from types import SimpleNamespace

    from cnnzoo.model.devices import resolve_precision
    from cnnzoo.runs.load import trained_precision

    cpu = torch.device("cpu")
    config = cnnzoo.load_config("lenet5")

    def run(info, results=None):
        return SimpleNamespace(info=info, results=results, config=config)

    assert trained_precision(run({"precision": "bf16"}), cpu) == "bf16"
    assert trained_precision(run({"precision": "fp32"}), cpu) == "fp32"
    assert trained_precision(run({}, {"precision": "bf16"}), cpu) == "bf16"  # older runs
    fallback = resolve_precision(config.train.precision, cpu)
    assert trained_precision(run({}), cpu) == fallback
    assert trained_precision(run({"precision": "fp16"}), cpu) == fallback  # no fp16 on a CPU
