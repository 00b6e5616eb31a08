"""Trained weights that ship with cnnzoo, and trained weights from elsewhere.

A packed weights file (`configs/weights/NAME.safetensors`, installed as
`cnnzoo/configs/weights/`) holds what a finished run learned and nothing that the
config rebuilds by itself: the frozen kernels of `weights:` convs and batchnorm's
step counter are left out. Its header carries the resolved config, the class names
and the normalisation, so one file is enough to evaluate, predict, visualise, export
or fine-tune. Tensors stay fp32: `cnnzoo eval NAME --pretrained` then repeats the
recorded test accuracy exactly; fp16 would halve a set that is already small and
could move that accuracy by a few images.

Every file is checked before any tensor is used: a bundled one against the SHA-256
of its record in `configs/results.json`, a downloaded one against the `#sha256=` of
its URL, and all of them against the digest in their own header.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import nn

from cnnzoo.config.experiment import ExperimentConfig, parse_config
from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.model.build import Network
from cnnzoo.model.build import build_model as build_network
from cnnzoo.model.plan import Plan
from cnnzoo.runs import rundir
from cnnzoo.runs.checkpoint import parse_weights, save_weights, tensors_digest
from cnnzoo.utils.files import atomic_write_bytes

PACKED_FORMAT = "cnnzoo-pretrained-1"
WEIGHTS_DIR = "weights"
# What a packed file's header keeps of the run's run.json.
RUN_KEYS = ("name", "dataset", "classes", "mean", "std", "input", "precision")
# Hosts a plain http:// URL may name: a server on this machine, as in the tests.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recomputable(name: str, module_params: dict[str, nn.Parameter], value: torch.Tensor,
                 fresh: dict[str, torch.Tensor]) -> bool:
    """True for a tensor a packed file leaves out: batchnorm's step counter, and a frozen
    parameter that the config builds with exactly this value (a fixed kernel)."""
    if name.endswith("num_batches_tracked"):
        return True
    param = module_params.get(name)
    return (param is not None and not param.requires_grad and name in fresh
            and torch.equal(fresh[name], value.cpu()))


def stored_tensors(model: Network) -> dict[str, torch.Tensor]:
    """The tensors of `model` that its config cannot rebuild, on the CPU."""
    fresh = build_network(model.plan).state_dict()
    params = dict(model.named_parameters())
    return {name: value.detach().cpu().contiguous()
            for name, value in model.state_dict().items()
            if not recomputable(name, params, value, fresh)}


def pack_bytes(model: Network, config: ExperimentConfig, info: dict[str, Any],
               test_accuracy: float) -> bytes:
    """A packed weights file's bytes: the tensors to keep, the config and run info."""
    from safetensors.torch import save

    tensors = stored_tensors(model)
    meta = {
        "format": PACKED_FORMAT,
        "name": config.name,
        "config": config.to_yaml(),
        "run": json.dumps({k: info[k] for k in RUN_KEYS if k in info}),
        "test_accuracy": repr(float(test_accuracy)),
    }
    meta["sha256"] = tensors_digest(tensors, meta)
    return save(tensors, metadata=meta)


def pack_run(run_dir: Path, dest_dir: Path, *, command: str | None = None,
             machine: str | None = None, date: str | None = None) -> dict[str, Any]:
    """Pack the finished run in `run_dir` into DEST_DIR/NAME.safetensors (atomically);
    return its record for configs/results.json: file (relative to dest_dir's parent),
    sha256 of the whole file, bytes, dtype, test_accuracy, command, date, machine."""
    from cnnzoo.runs.checkpoint import load_into

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
        "command": command or results.get("command") or run.info.get("command"),
        "date": date or str(results.get("finished", ""))[:10] or None,
        "machine": machine or results.get("device"),
    }


@dataclass(frozen=True)
class Packed:
    """A packed weights file, read and verified."""

    source: str  # what the user named: a bundled config, a path or a URL
    path: Path
    sha256: str  # of the whole file
    config: ExperimentConfig
    info: dict[str, Any]  # name, dataset, classes, mean, std, input
    tensors: dict[str, torch.Tensor]
    test_accuracy: float | None


def bundled_record(name: str) -> dict[str, Any] | None:
    """The `pretrained` record of a bundled config, or None when it has no weights."""
    from cnnzoo.config.bundled import read_measured

    record = read_measured().get(name) or {}
    return record.get("pretrained")


def bundled_with_weights() -> list[str]:
    from cnnzoo.config.bundled import read_measured

    return sorted(n for n, r in read_measured().items() if r.get("pretrained"))


def resolve_source(source: str) -> tuple[Path, str | None]:
    """(a local file, the SHA-256 it must have or None) for a bundled config's name, a
    path, or an `https://...#sha256=HEX` URL (downloaded once into the cache)."""
    from cnnzoo.config.bundled import bundled_configs, bundled_dir

    if "://" in source:
        return download(source)
    if source in bundled_configs():
        record = bundled_record(source)
        if record is None:
            have = ", ".join(bundled_with_weights()) or "none yet"
            raise CnnzooError(
                f"the bundled config {source} has no pretrained weights (configs with weights: "
                f"{have}); train it with `cnnzoo train --config {source}` and use the run "
                "directory instead"
            )
        directory = bundled_dir()
        assert directory is not None  # bundled_configs() found it
        return directory / record["file"], record["sha256"]
    path = Path(source)
    if path.is_file():
        return path, None
    raise CnnzooError(
        f"no pretrained weights '{source}': give a bundled config with weights "
        f"({', '.join(bundled_with_weights()) or 'none yet'}), a .safetensors file made by "
        "cnnzoo, or an https://...#sha256=HEX URL"
    )


def open_packed(source: str) -> Packed:
    """Find, verify and read packed weights. A file whose hash is not the expected
    one is refused before safetensors parses a byte of it."""
    path, expected = resolve_source(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read the weights file {path}: {exc.strerror}") from None
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected.lower():
        raise CheckpointError(
            f"corrupt weights file {path}: its SHA-256 is {actual}, the record says "
            f"{expected}; refusing to load it (reinstall cnnzoo, or fetch the file again)"
        )
    tensors, meta = parse_weights(data, path)
    if meta.get("format") != PACKED_FORMAT:
        raise CheckpointError(
            f"{path} is not a packed cnnzoo weights file (format {meta.get('format')!r}, "
            f"expected {PACKED_FORMAT!r}); a run's own model.safetensors is used through its "
            "run directory"
        )
    config = parse_config(meta["config"])
    info = json.loads(meta["run"])
    accuracy = float(meta["test_accuracy"]) if "test_accuracy" in meta else None
    return Packed(source, path, actual, config, info, tensors, accuracy)


def load_packed(model: Network, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load packed tensors into `model`, whose config rebuilt what the file leaves out."""
    fresh = model.state_dict()
    params = dict(model.named_parameters())
    missing = [name for name, value in fresh.items()
               if name not in tensors and not recomputable(name, params, value, fresh)]
    unexpected = sorted(set(tensors) - set(fresh))
    wrong = sorted(n for n in set(tensors) & set(fresh) if tensors[n].shape != fresh[n].shape)
    if missing or unexpected or wrong:
        problems = ([f"{n} is missing" for n in sorted(missing)]
                    + [f"{n} is not in the model" for n in unexpected]
                    + [f"{n}: {list(tensors[n].shape)} vs the model's {list(fresh[n].shape)}"
                       for n in wrong])
        raise CheckpointError(f"the weights in {source} do not fit the model: "
                              + "; ".join(problems[:12]))
    model.load_state_dict(tensors, strict=False)


def pretrained_model(source: str, model: Network | None = None) -> Network:
    """`model` (default: the network the weights were trained as) with the verified
    weights of `source`, in eval mode on the CPU."""
    packed = open_packed(source)
    model = build_network(packed.config) if model is None else model
    load_packed(model, packed.tensors, packed.path)
    return model.eval()


def cache_dir() -> Path:
    """Where downloads and unpacked runs go: $CNNZOO_CACHE, else torch.hub's cache
    folder's sibling `cnnzoo` (~/.cache/cnnzoo by default)."""
    if os.environ.get("CNNZOO_CACHE"):
        return Path(os.environ["CNNZOO_CACHE"])
    import torch.hub

    return Path(torch.hub.get_dir()).parent / "cnnzoo"


def unpack(source: str) -> Path:
    """A run directory for verified packed weights (cached by the file's SHA-256), so
    that everything that reads runs (eval, predict, viz, export) reads these too."""
    packed = open_packed(source)
    run_dir = cache_dir() / "pretrained" / f"{packed.config.name}-{packed.sha256[:16]}"
    if (run_dir / rundir.WEIGHTS).exists():
        return run_dir
    model = build_network(packed.config)
    load_packed(model, packed.tensors, packed.path)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        (staging / rundir.CONFIG).write_text(packed.config.to_yaml())
        rundir.write_json(staging / rundir.RUN, {**packed.info, "source": str(packed.path),
                                             "sha256": packed.sha256})
        save_weights(model, staging / rundir.WEIGHTS, {"name": packed.config.name})
        os.replace(staging, run_dir)
    except OSError:
        if not (run_dir / rundir.WEIGHTS).exists():  # not a concurrent unpack of the same file
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_dir


def split_url(url: str) -> tuple[str, str]:
    """(the URL without its fragment, the hex SHA-256 of its `#sha256=` fragment)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise CnnzooError(f"cannot fetch weights from {url}: only https:// URLs are supported")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        raise CnnzooError(
            f"refusing http:// for {parts.hostname}: weights are fetched over https:// "
            "(plain http only from this machine, 127.0.0.1 or localhost)"
        )
    fragment = parts.fragment
    hexdigest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""
    if len(hexdigest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hexdigest):
        raise CnnzooError(
            f"the URL {url} has no SHA-256: append '#sha256=' and the 64 hex digits of the "
            "file's SHA-256 (sha256sum FILE), so that a changed or damaged file is refused"
        )
    return url.split("#", 1)[0], hexdigest.lower()


def download(url: str) -> tuple[Path, str]:
    """Fetch `url` into the cache once (torch.hub's downloader, which checks the hash
    before the file gets its name); later calls reuse the file. Returns (path, sha256)."""
    import torch.hub

    bare, expected = split_url(url)
    name = Path(urlsplit(bare).path).name or "weights.safetensors"
    target = cache_dir() / "downloads" / f"{expected[:16]}-{name}"
    if target.exists():
        return target, expected  # open_packed checks the whole hash again
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(bare, str(target), hash_prefix=expected, progress=False)
    except RuntimeError as exc:
        raise CheckpointError(f"corrupt download from {bare}: {exc}; nothing was kept") from None
    except OSError as exc:
        raise CnnzooError(f"cannot download {bare}: {exc}") from None
    return target, expected


# The shipped weights live inside the package; a network whose weights alone would
# weigh tens of megabytes (CapsNet's 8.2 M parameters: 33 MB) is measured and recorded
# but not shipped.
MAX_SHIPPED_BYTES = 16 * 2**20


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


def build_model(config_or_path: ExperimentConfig | Plan | str | Path,
                pretrained: bool | str = False) -> Network:
    """`cnnzoo.build_model`: the `nn.Module` of an experiment (a config, a plan, a file
    path or a bundled name), untrained, as `cnnzoo.model.build.build_model` makes it.

    `pretrained=True` (with a bundled config's name) returns it with its shipped trained
    weights, verified, in eval mode; a string names the weights instead: a packed
    .safetensors file or an `https://...#sha256=HEX` URL.
    """
    if pretrained is False:
        return build_network(config_or_path)
    if pretrained is True:
        if not isinstance(config_or_path, str):
            raise CnnzooError("pretrained=True needs a bundled config's name, such as "
                              "build_model('lenet5', pretrained=True); give the weights "
                              "themselves with pretrained='FILE' or an https URL")
        return pretrained_model(config_or_path)
    return pretrained_model(str(pretrained), build_network(config_or_path))
