"""Packing a finished run into shipped weights: the packed file and its record for
`configs/results.json`, as `scripts/zoo_results.py` writes them for the zoo.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cnnzoo.errors import CheckpointError
from cnnzoo.model.build import build_network
from cnnzoo.runs import rundir
from cnnzoo.runs.checkpoint import load_into
from cnnzoo.runs.packed import pack_bytes
from cnnzoo.utils.files import atomic_write_bytes

WEIGHTS_DIR = "weights"
# The shipped weights live inside the package; a network whose weights alone would
# weigh tens of megabytes (CapsNet's 8.2 M parameters: 33 MB) is measured and recorded
# but not shipped.
MAX_SHIPPED_BYTES = 16 * 2**20


def pack_run(run_dir: Path, dest_dir: Path, *, command: str | None = None,
             machine: str | None = None, date: str | None = None) -> dict[str, Any]:
    """Pack the finished run in `run_dir` into DEST_DIR/NAME.safetensors (atomically);
    return its record for configs/results.json: file (relative to dest_dir's parent),
    sha256 of the whole file, bytes, dtype, test_accuracy, the run's seed (a record over
    several seeds ships one of them), command, date, machine."""
    run = rundir.open_run(run_dir)
    results = run.results
    if results is None or "test_accuracy" not in results:
        raise CheckpointError(f"{run.path} has no {rundir.RESULTS}: the run did not finish")
    weights = run.path / rundir.WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{run.path} has no {rundir.WEIGHTS} to pack")
    model = build_network(run.config)
    load_into(model, weights)
    # The precision the run was tested in (results.json of runs older than run.json's
    # own field): eval --pretrained repeats the recorded accuracy in it.
    info = {**run.info, "precision": run.info.get("precision", results.get("precision"))}
    data = pack_bytes(model, run.config, info, results["test_accuracy"])
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{run.config.name}.safetensors"
    atomic_write_bytes(path, data)
    return {
        "file": f"{dest_dir.name}/{path.name}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "dtype": "fp32",
        "test_accuracy": results["test_accuracy"],
        "seed": run.config.train.seed,
        "command": command or results.get("command") or run.info.get("command"),
        "date": date or str(results.get("finished", ""))[:10] or None,
        "machine": machine or results.get("device"),
    }


def pack_for_zoo(run_dir: Path, adaptation: list[str], configs_dir: Path,
                 record: dict[str, Any]) -> dict[str, Any] | None:
    """The `pretrained` record of a zoo measurement: the run's packed weights when it
    trained on the config's own dataset and input (an adapted run's weights are not the
    config's) and they are at most MAX_SHIPPED_BYTES, with the measurement's command,
    date and machine."""
    if adaptation:
        return None
    packed = pack_run(run_dir, configs_dir / WEIGHTS_DIR, command=record["command"],
                      machine=record["machine"], date=record["date"])
    if packed["bytes"] > MAX_SHIPPED_BYTES:
        (configs_dir / packed["file"]).unlink()
        print(f"--- {run_dir.name}: weights not shipped: {packed['bytes'] / 2**20:.0f} MB is "
              f"over the {MAX_SHIPPED_BYTES // 2**20} MB the package keeps per network",
              flush=True)
        return None
    return packed
