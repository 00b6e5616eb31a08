"""1. Untrusted checkpoint files: a state that would run code is refused before it
runs, and every damaged weights file or training state is a corrupt checkpoint."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.errors import CheckpointError
from cnnzoo.runs.checkpoint import load_state, load_weights, parse_weights, save_weights
from cnnzoo.training.stopping import Interrupted
from tests.system.reliability.common import (
    TINY,
    USER_ERROR,
    RunsCode,
    flip_bit,
    snapshot,
    train,
)


def evil_state(path: Path, marker: Path, flavour: str) -> None:
    touch = f"touch {marker}"
    if flavour == "torch_zip_os_system":
        torch.save({"step": 1, "x": RunsCode(os.system, touch)}, path)
    elif flavour == "torch_zip_exec":
        torch.save({"step": 1, "x": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w')")},
                   path)
    else:  # a bare pickle, as torch.save wrote before its zip format
        path.write_bytes(pickle.dumps({"step": 1, "x": RunsCode(os.system, touch)}, protocol=2))


FLAVOURS = ["torch_zip_os_system", "torch_zip_exec", "bare_pickle"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_state_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, flavour):
    marker = tmp_path / "MARKER"
    evil_state(tmp_path / "state.pt", marker, flavour)
    with pytest.raises(CheckpointError) as refused:
        load_state(tmp_path / "state.pt")
    message = str(refused.value)
    assert f"refused to load {tmp_path / 'state.pt'}" in message
    assert "never runs code" in message
    assert "weights_only" not in message  # no advice to switch the protection off
    if flavour == "torch_zip_os_system":
        assert "posix.system" in message or "os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize("flavour", ["torch_zip_os_system", "bare_pickle"])
def test_resume_refuses_a_state_that_would_run_code(tmp_path, cli, interrupted, data_root,
                                                    flavour):
    run = interrupted(13)
    marker = tmp_path / "MARKER"
    evil_state(run / "state.pt", marker, flavour)
    result = cli("train", "--resume", run, "--data-root", data_root)
    assert result.code == USER_ERROR, result.err
    assert result.err.startswith("error: refused to load") and result.err.count("\n") == 1
    assert not marker.exists()


class Smallest(torch.nn.Module):
    """A weight and a 0-d buffer (like batchnorm's num_batches_tracked): a small file
    with every kind of header entry."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.5, -2.0, 0.25]))
        self.register_buffer("n", torch.tensor(7))


def test_every_single_bit_flip_in_a_weights_file_is_caught(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(Smallest(), path, {"name": "tiny"})
    good = path.read_bytes()
    assert load_weights(path)[0]["n"].shape == ()
    for index in range(len(good)):
        for bit in range(8):
            with pytest.raises(CheckpointError, match=r"^corrupt checkpoint"):
                parse_weights(flip_bit(good, index, bit), path)  # load_weights, from memory


def _rewrite_header(data: bytes, edit) -> bytes:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    first = sorted(k for k in json.loads(data[8:8 + size]) if k != "__metadata__")[0]

    def grow_shape(header):
        header[first]["shape"][-1] += 1

    def shift_offsets(header):
        header[first]["data_offsets"] = [o + 4 for o in header[first]["data_offsets"]]

    def swap_same_size(header):  # consistent offsets, but each tensor gets the other's bytes
        names = sorted(k for k in header if k != "__metadata__")
        a, b = names[0], next(n for n in names[1:] if header[n]["shape"] == header[names[0]][
            "shape"])
        header[a]["data_offsets"], header[b]["data_offsets"] = (header[b]["data_offsets"],
                                                                header[a]["data_offsets"])

    damaged = {
        "truncated": lambda: data[: len(data) - 100],
        "data_bit": lambda: flip_bit(data, len(data) - 3, 2),
        "header_bit": lambda: flip_bit(data, 8 + size // 2, 0),
        "header_claims_more": lambda: (size + 10**6).to_bytes(8, "little") + data[8:],
        "header_shape_lies": lambda: _rewrite_header(data, grow_shape),
        "header_offsets_lie": lambda: _rewrite_header(data, shift_offsets),
        "header_swaps_tensors": lambda: _rewrite_header(data, swap_same_size),
    }[how]()
    path.write_bytes(damaged)


DAMAGES = ["truncated", "data_bit", "header_bit", "header_claims_more", "header_shape_lies",
           "header_offsets_lie", "header_swaps_tensors"]


@pytest.fixture(scope="module")
def twin_run(work, data_root):
    """A run with two tensors of one shape (two convs' biases), for the header that
    swaps them."""
    config = cnnzoo.parse_config(TINY.replace(
        "    - pool: 4\n", "    - conv: {filters: 4, kernel: 3, padding: same}\n    - pool: 4\n"))
    with pytest.raises(Interrupted):
        train(config, data_root, out=work / "twin", stop_after_steps=3)
    return work / "twin"


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_weights_are_a_corrupt_checkpoint(tmp_path, cli, interrupted, twin_run,
                                                  data_root, how, command):
    if how == "header_swaps_tensors":
        run = tmp_path / "run"
        shutil.copytree(twin_run, run)
    else:
        run = interrupted(13)
    _damage(run / "model.safetensors", how)
    before = snapshot(run)
    args = (("eval", run) if command == "eval" else ("train", "--resume", run))
    result = cli(*args, "--data-root", data_root)
    assert result.code == USER_ERROR, result.err
    assert result.err.startswith(f"error: corrupt checkpoint {run / 'model.safetensors'}")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert snapshot(run) == before  # nothing was written over the evidence


def test_damaged_training_state_is_a_corrupt_checkpoint(tmp_path, cli, interrupted, data_root):
    run = interrupted(13)
    good = (run / "state.pt").read_bytes()
    rng = random.Random(0)
    damaged = tmp_path / "state.pt"
    for _ in range(150):
        damaged.write_bytes(flip_bit(good, rng.randrange(len(good)), rng.randrange(8)))
        try:
            load_state(damaged)
        except CheckpointError as exc:
            assert str(exc).startswith(("corrupt checkpoint", "refused to load")), exc
        else:  # only a flip in bytes torch never reads (zip padding, names) may load,
            # and then the content must be exactly the saved one
            assert cnnzoo.runs.checkpoint.state_digest(load_state(damaged)) == \
                cnnzoo.runs.checkpoint.state_digest(load_state(run / "state.pt"))
    (run / "state.pt").write_bytes(good[: len(good) // 2])
    result = cli("train", "--resume", run, "--data-root", data_root)
    assert result.code == USER_ERROR
    assert result.err.startswith(f"error: corrupt checkpoint {run / 'state.pt'}")


def test_a_state_whose_content_was_edited_is_refused(tmp_path, interrupted):
    run = interrupted(13)
    state = torch.load(run / "state.pt", weights_only=True)
    state["position"]["step"] += 1  # a plausible edit: the loader alone would accept it
    torch.save(state, run / "state.pt")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_state(run / "state.pt")
