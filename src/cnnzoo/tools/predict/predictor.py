"""`cnnzoo.Predictor`: a trained network that answers images with its most likely
classes; `cnnzoo predict` and `cnnzoo serve` both stand on it.

An image is read as training read it (data/images.py: converted to the input's
channels, resized to its W x H, rounded to uint8), normalised by the run's mean and
std, and run through the network with the run's test-time augmentation. A run trained
with a loss that fits no probabilities (svm, margin) is answered with raw class scores
under `score`: a softmax of such scores would look like a probability without being one.

Two backends compute the same numbers: `torch` (the run's module) and `onnxruntime`
(the network exported to ONNX on first use by tools/export.py, cached by the weights'
SHA-256 next to the run, or in the user cache where the run's folder is read-only, and
compared with the torch module every time it is opened).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.data.images import read_image
from cnnzoo.errors import CnnzooError, DataError
from cnnzoo.layers.shapes import Volume
from cnnzoo.model.devices import resolve_device
from cnnzoo.runs import rundir
from cnnzoo.runs.load import load_run_model, run_transform
from cnnzoo.training.evaluation import predict_logits
from cnnzoo.training.losses import create_loss

BACKENDS = ("torch", "onnxruntime")
CHECK_BATCH = 4  # images in the batch that compares an ONNX file with the torch module


@dataclass(frozen=True)
class Guess:
    """One of an image's most likely classes."""

    name: str  # the class name, as the run's dataset gives it
    index: int  # its position in the run's class list
    value: float  # its probability, or its raw score (see Prediction.kind)


@dataclass(frozen=True)
class Prediction:
    """The answer for one image: its top classes, or why it could not be read."""

    image: str  # the path or name the image came by
    top: tuple[Guess, ...] = ()  # most likely first; empty when `error` is set
    error: str | None = None  # why the image could not be read
    kind: str = "probability"  # what Guess.value is: probability or score

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form `cnnzoo predict --json` and `cnnzoo serve` give."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image,
                "top": [{"class": g.name, "index": g.index, self.kind: g.value} for g in self.top]}


class NamedBytes(io.BytesIO):
    """Image bytes that the reader's messages call by a name (an upload's file name)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


def check_backend(backend: str, device: str) -> torch.device:
    """The device `backend` runs on for `--device device`; CnnzooError for an unknown
    backend, a device that is not there, or onnxruntime asked for another than the CPU."""
    if backend not in BACKENDS:
        raise CnnzooError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and device not in ("auto", "cpu"):
        raise CnnzooError(f"--backend onnxruntime runs on the CPU; --device {device} is "
                          "for --backend torch")
    return resolve_device(device) if backend == "torch" else torch.device("cpu")


def decode(item: str | Path | NamedBytes, volume: Volume) -> np.ndarray:
    """One image as uint8 (C, H, W) of `volume`'s size; DataError when it cannot be read
    (a missing file, a folder, a damaged or oversized image, all named by the reader)."""
    return read_image(item, volume).numpy()


class Predictor:
    """A trained run ready to classify images.

    `source` is a run directory, or with `pretrained=True` a bundled config's name, a
    packed .safetensors file or an https://...#sha256=HEX URL.
    """

    def __init__(self, source: str | Path, *, pretrained: bool = False,
                 backend: str = "torch", device: str = "auto", top: int = 3) -> None:
        self.device = check_backend(backend, device)
        if top < 1:
            raise CnnzooError(f"top must be at least 1. Received: top={top}")
        if pretrained:
            from cnnzoo.runs.pretrained import unpack

            source = unpack(str(source))
        self.run = rundir.open_run(source)
        self.backend = backend
        self.top = top
        self.volume = Volume(*self.run.info["input"])
        self.classes = self.run.classes
        self.kind = ("probability" if create_loss(self.run.config.train.loss).probabilities
                     else "score")
        self.transform = run_transform(self.run, self.device)
        module = load_run_model(self.run, self.device)
        self.network: Callable[[torch.Tensor], torch.Tensor] = module
        if backend == "onnxruntime":
            self.network = open_onnx(self.run, module)
        self.runs_as = backend  # how the network runs: the server may make it one call
        self.params = sum(p.numel() for p in module.parameters())
        self.weights_sha256 = weights_digest(self.run)

    @property
    def metadata(self) -> dict[str, Any]:
        """What a client needs to know of the network behind the answers."""
        from cnnzoo.version import __version__

        config = self.run.config
        return {
            "name": config.name, "dataset": config.data.dataset,
            "input": {"width": self.volume.width, "height": self.volume.height,
                      "depth": self.volume.depth},
            "normalization": {"normalize": config.data.normalize, "mean": self.run.info["mean"],
                              "std": self.run.info["std"]},
            "classes": len(self.classes), "answers": self.kind, "tta": config.train.tta,
            "params": self.params, "weights_sha256": self.weights_sha256,
            "backend": self.backend, "runs_as": self.runs_as, "cnnzoo": __version__,
        }

    def scores(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, classes) probabilities (or scores) of uint8 images (N, C, H, W)."""
        with torch.no_grad():
            batch = self.transform.normalize(pixels.to(self.device))
            logits = predict_logits(self.network, batch, self.run.config.train.tta,
                                    self.transform.neg_shift).float().cpu()
        return logits.softmax(1) if self.kind == "probability" else logits

    def classes_per_answer(self, top: int | None = None) -> int:
        """How many classes an answer lists: `top` (default: the Predictor's), at most
        all of them."""
        return min(top or self.top, len(self.classes))

    def rank(self, pixels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The `count` highest probabilities (or scores) of each uint8 image of `pixels`
        (N, C, H, W), most likely first, as float32 (N, count), and their classes (N, count)."""
        values, index = self.scores(torch.from_numpy(pixels)).topk(count, 1)
        return values.numpy(), index.numpy()

    def predictions(self, names: list[str], errors: list[str | None], values: np.ndarray,
                    index: np.ndarray) -> list[Prediction]:
        """The answers, in order, from `rank`'s rows for the images whose error is None
        (in their order); the others get their error."""
        rows = zip(values.tolist(), index.tolist(), strict=True)  # one tolist for the batch
        answers = []
        for name, error in zip(names, errors, strict=True):
            if error is not None:
                answers.append(Prediction(name, error=error, kind=self.kind))
                continue
            row_values, row_index = next(rows)
            answers.append(Prediction(name, tuple(
                Guess(self.classes[k], k, v)
                for v, k in zip(row_values, row_index, strict=True)), kind=self.kind))
        return answers

    def answer(self, names: list[str], pixels: list[np.ndarray | None],
               errors: list[str | None], top: int | None = None) -> list[Prediction]:
        """Predictions for decoded images, in order: an image whose pixels are None gets
        its error instead, and the readable ones run as one batch."""
        readable = [p for p in pixels if p is not None]
        count = self.classes_per_answer(top)
        values = index = np.zeros((0, count))
        if readable:
            values, index = self.rank(np.stack(readable), count)
        return self.predictions(names, [None if p is not None else error or "unreadable"
                                        for p, error in zip(pixels, errors, strict=True)],
                                values, index)

    def predict(self, images: Iterable[str | Path | bytes] | str | Path | bytes,
                top: int | None = None) -> list[Prediction]:
        """Predictions for image files or encoded image bytes, read in this process and
        run as one batch (`cnnzoo predict` streams long lists through worker processes)."""
        if isinstance(images, (str, Path, bytes)):
            images = [images]
        names, pixels, errors = [], [], []
        for i, item in enumerate(images):
            source = NamedBytes(item, f"image {i}") if isinstance(item, bytes) else item
            names.append(str(source))
            try:
                pixels.append(decode(source, self.volume))
                errors.append(None)
            except DataError as exc:
                pixels.append(None)
                errors.append(str(exc))
        return self.answer(names, pixels, errors, top)


def weights_digest(run: rundir.Run) -> str:
    """The hex SHA-256 of the run's trained weights file."""
    digest = hashlib.sha256()
    with open(run.path / rundir.WEIGHTS, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_path(run: rundir.Run) -> Path:
    """Where the run's ONNX file is cached: beside its weights, or in the user cache
    when the run's folder cannot be written (a shared or installed run)."""
    name = f"model-{weights_digest(run)[:16]}.onnx"
    if os.access(run.path, os.W_OK):
        return run.path / name
    from cnnzoo.runs.download import cache_dir

    folder = cache_dir() / "onnx" / run.config.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def open_onnx(run: rundir.Run, module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The run's network in onnxruntime, exported first if its file is not cached, and
    compared with `module` on a batch before it answers anything."""
    from cnnzoo.tools.export import TOLERANCE, check_format, export_run

    check_format("onnx")
    import onnxruntime

    path = onnx_path(run)
    if not path.exists():
        export_run(run.path, "onnx", path, say=lambda _: None)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the threads torch would use
    try:
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:  # a damaged cached file: say which, and how to get a new one
        raise CnnzooError(f"cannot open {path}: {exc}; delete it and it is exported "
                          "again") from None
    name = session.get_inputs()[0].name

    def network(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy())})[0])

    volume = Volume(*run.info["input"])
    example = torch.randn(CHECK_BATCH, volume.depth, volume.height, volume.width,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(example).float()
    difference = float((network(example) - expected).abs().max())
    if not difference <= TOLERANCE * max(1.0, float(expected.abs().max())):
        raise CnnzooError(f"{path} does not compute what the run's network does (its output "
                          f"differs by {difference:.3g}); delete it and it is exported again")
    return network
