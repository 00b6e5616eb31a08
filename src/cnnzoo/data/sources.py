"""Finding a dataset's files on this machine (or downloading them) and reading them
into uint8 tensors.

The search order: `data.root`, `--data-root`, `$CNNZOO_DATA`, the per-user cache,
the folders distribution packages install (Debian's `dataset-fashion-mnist`), and
only then torchvision's download. Files are read where they are, read-only.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnzoo.config.datasets import DatasetInfo
from cnnzoo.data.idx import read_idx
from cnnzoo.errors import DataError
from cnnzoo.utils.auto import resolve
from cnnzoo.utils.network import default_socket_timeout, download_timeout, sigterm_stops, timed_out


@dataclass(frozen=True)
class RawSplit:
    """One split of a dataset as it is stored: uint8 images (N, C, H, W) and labels."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str  # where it was read from, for the log


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "cnnzoo" / "datasets"


def search_dirs(root: str | None, data_root: str | None) -> list[tuple[Path, str]]:
    """Where to look, in order, with the reason each place is searched."""
    dirs = []
    if root:
        dirs.append((Path(root).expanduser(), "data.root"))
    if data_root:
        dirs.append((Path(data_root).expanduser(), "--data-root"))
    if os.environ.get("CNNZOO_DATA"):
        dirs.append((Path(os.environ["CNNZOO_DATA"]).expanduser(), "$CNNZOO_DATA"))
    dirs.append((user_cache_dir(), "the user cache"))
    return dirs


def _candidates(info: DatasetInfo, dirs: list[tuple[Path, str]]) -> Iterator[Path]:
    """Every folder that may hold the dataset's files, most specific layouts included."""
    names = [info.name, info.name.replace("_", "-")]
    if info.torchvision_class:
        names.append(info.torchvision_class)
    seen = set()
    bases = [d for d, _ in dirs] + [Path(p) for p in info.system_dirs]
    for base in bases:
        for folder in (base, *(base / n for n in names), *(base / n / "raw" for n in names)):
            if folder not in seen:
                seen.add(folder)
                yield folder


def load_split(
    info: DatasetInfo,
    split: str,
    dirs: list[tuple[Path, str]],
    download: bool | str = "auto",
) -> RawSplit:
    """The `split` ('train' or 'test') of a stored dataset, found or downloaded."""
    reader = _READERS[info.layout]
    for folder in _candidates(info, dirs):
        found = reader(info, split, folder)
        if found is not None:
            return found
    # auto: download when the files are not found here (a plain true does the same)
    if not resolve(download, lambda: True):
        raise DataError(_not_found(info, dirs, "download is off (data.download: false)"))
    target = dirs[0][0] if dirs[0][1] != "the user cache" else user_cache_dir()
    _download(info, target, dirs)
    for folder in _candidates(info, [(target, "download")]):
        found = reader(info, split, folder)
        if found is not None:
            return found
    raise DataError(_not_found(info, dirs, f"the download into {target} did not give the files"))


def _not_found(info: DatasetInfo, dirs: list[tuple[Path, str]], why: str) -> str:
    places = [f"{path} ({reason})" for path, reason in dirs]
    places += [f"{p} (system)" for p in info.system_dirs]
    ways = [
        "put the files in one of those folders, or point to them with data.root, "
        "--data-root or $CNNZOO_DATA",
        "allow a download on a machine with internet access (data.download: auto)",
    ]
    if info.note.startswith("Debian"):
        ways.insert(0, info.note.split(": ", 1)[1].join(["run '", "' (as root)"]))
    return (
        f"dataset {info.name} not found; {why}. Looked in: {', '.join(places)}. "
        f"To get it: " + "; or ".join(ways)
    )


def _download(info: DatasetInfo, target: Path, dirs: list[tuple[Path, str]]) -> None:
    """torchvision's download into a temp folder, moved into `target` only when complete."""
    import torchvision

    cls = getattr(torchvision.datasets, info.torchvision_class)
    timeout = download_timeout()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(_not_found(info, dirs, f"cannot create {target}: {exc.strerror}")) from None
    tmp = Path(tempfile.mkdtemp(prefix=f".download-{info.name}-", dir=target))
    stopped = f"SIGTERM: the download of {info.name} stopped; nothing was kept in {target}"
    try:
        with (contextlib.redirect_stdout(io.StringIO()), default_socket_timeout(timeout),
              sigterm_stops(stopped)):
            for split in ("train", "test"):
                if info.layout == "svhn":
                    cls(tmp, split=split, download=True)
                else:
                    cls(tmp, train=split == "train", download=True, **info.torchvision_args)
        for item in tmp.iterdir():
            destination = target / item.name
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            item.rename(destination)
    except Exception as exc:  # urllib, socket, zip and checksum errors all mean "no data"
        # torchvision tries each mirror and lists their errors over several lines
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        if "timed out" in reason:
            reason += f"; {timed_out(timeout)}"
        raise DataError(_not_found(info, dirs, f"the download failed ({reason})")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_idx_split(info: DatasetInfo, split: str, folder: Path) -> RawSplit | None:
    stems = info.idx_files[split]
    paths = []
    for stem in stems:
        path = next((folder / f"{stem}{ext}" for ext in (".gz", "") if
                     (folder / f"{stem}{ext}").is_file()), None)
        if path is None:
            return None
        paths.append(path)
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{paths[0]} and {paths[1]} do not fit together: images {images.shape}, "
            f"labels {labels.shape}"
        )
    if info.transposed:
        images = images.transpose(0, 2, 1)
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)
    return RawSplit(tensor, _labels(labels, info, paths[1]), info.classes, str(folder))


def _labels(labels: np.ndarray, info: DatasetInfo, path: Path) -> torch.Tensor:
    out = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    if info.num_classes is not None and len(out) and (out.min() < 0 or
                                                      out.max() >= info.num_classes):
        raise DataError(
            f"{path}: labels run from {int(out.min())} to {int(out.max())}, but "
            f"{info.name} has {info.num_classes} classes"
        )
    return out


def _check_memo(raw: bytes) -> None:
    """Walk the opcodes first: a damaged memo index makes the unpickler grow (and zero)
    a table of that many entries, gigabytes, before it notices anything wrong."""
    import pickletools

    for opcode, arg, _ in pickletools.genops(raw):
        if opcode.name.endswith("PUT") and isinstance(arg, int) and arg > len(raw):
            raise pickle.UnpicklingError(f"memo index {arg:,} in a file of {len(raw):,} bytes")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings, nothing that can run code."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        raw = path.read_bytes()
        _check_memo(raw)
        data = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise DataError(f"cannot read {path}: {exc}; delete it and fetch it again") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a CIFAR batch (a dict of data and labels)")
    return data


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                 "fine_label_names"),
}


def _read_cifar_split(info: DatasetInfo, split: str, folder: Path) -> RawSplit | None:
    subdir, train_files, test_files, meta_file, label_key, names_key = _CIFAR[info.name]
    base = folder / subdir
    files = [base / f for f in (train_files if split == "train" else test_files)]
    if not all(f.is_file() for f in files):
        return None
    images, labels = [], []
    for f in files:
        batch = _unpickle(f)
        data = np.asarray(batch.get("data"))
        if data.ndim != 2 or data.shape[1] != 3072 or label_key not in batch:
            raise DataError(f"{f} is not a CIFAR batch: data of shape {data.shape}")
        images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key]))
        if len(labels[-1]) != len(images[-1]):
            raise DataError(f"{f}: {len(images[-1])} images but {len(labels[-1])} labels")
    classes = info.classes
    if (base / meta_file).is_file():
        meta = _unpickle(base / meta_file)
        if names_key in meta:
            classes = tuple(str(n) for n in meta[names_key])
    if classes is None:
        raise DataError(f"{base / meta_file} is missing: it holds the class names")
    return RawSplit(
        torch.from_numpy(np.concatenate(images)),
        _labels(np.concatenate(labels), info, files[0]),
        classes,
        str(base),
    )


def _read_svhn_split(info: DatasetInfo, split: str, folder: Path) -> RawSplit | None:
    path = folder / f"{split}_32x32.mat"
    if not path.is_file():
        return None
    try:
        from scipy import io as sio
    except ImportError:
        raise DataError("reading SVHN's .mat files needs scipy: pip install scipy") from None
    try:
        mat = sio.loadmat(path)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DataError(f"cannot read {path}: {exc}") from None
    images = np.asarray(mat["X"]).transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    labels = np.asarray(mat["y"]).astype(np.int64).squeeze(1)
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    return RawSplit(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        _labels(labels, info, path),
        info.classes,
        str(folder),
    )


_READERS = {"idx": _read_idx_split, "cifar": _read_cifar_split, "svhn": _read_svhn_split}
