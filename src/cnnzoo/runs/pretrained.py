"""Trained weights that ship with cnnzoo, and trained weights from elsewhere: finding
them (a bundled config's name, a file, a URL), verifying them, and loading them.

The format is `runs.packed`'s, the shipped records `runs.shipped`'s, the URL cache
`runs.download`'s. Every file is checked before any tensor is used: a bundled one
against the SHA-256 of its record in `configs/results.json`, a downloaded one against
the `#sha256=` of its URL, and all of them against the digest in their own header.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from cnnzoo.config.experiment import ExperimentConfig
from cnnzoo.errors import CnnzooError
from cnnzoo.model.build import Network, build_network
from cnnzoo.model.plan import Plan
from cnnzoo.runs import rundir
from cnnzoo.runs.checkpoint import save_weights
from cnnzoo.runs.download import CACHE_ENV, cache_dir, download
from cnnzoo.runs.packed import Packed, load_packed, read_packed
from cnnzoo.runs.shipped import bundled_record, bundled_with_weights
from cnnzoo.utils.files import check_writable


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
    return read_packed(source, path, expected)


def pretrained_model(source: str, model: Network | None = None) -> Network:
    """`model` (default: the network the weights were trained as) with the verified
    weights of `source`, in eval mode on the CPU."""
    packed = open_packed(source)
    model = build_network(packed.config) if model is None else model
    load_packed(model, packed.tensors, packed.path)
    return model.eval()


def unpack(source: str) -> Path:
    """A run directory for verified packed weights (cached by the file's SHA-256), so
    that everything that reads runs (eval, predict, viz, export) reads these too."""
    packed = open_packed(source)
    run_dir = cache_dir() / "pretrained" / f"{packed.config.name}-{packed.sha256[:16]}"
    if (run_dir / rundir.WEIGHTS).exists():
        return run_dir
    check_writable(run_dir.parent, CACHE_ENV, folder=True)
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


def build_model(config_or_path: ExperimentConfig | Plan | str | Path,
                pretrained: bool | str = False) -> Network:
    """`cnnzoo.build_model`: the `nn.Module` of an experiment (a config, a plan, a file
    path or a bundled name), untrained, as `cnnzoo.model.build.build_network` makes it.

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
