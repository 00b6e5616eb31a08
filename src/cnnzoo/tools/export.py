"""`cnnzoo export`: a trained network as a file that runs without cnnzoo.

Three formats: ONNX (onnxruntime and most inference engines; needs the `onnx` extra),
TorchScript (`torch.jit.load`) and an ExportedProgram (`torch.export.load`). The batch
size is dynamic in all three. With preprocessing, the graph takes uint8 images
N x C x H x W as the dataset stores them and does what training did to them (channels,
resize, pad, normalisation) before the network. The class names and the normalisation
travel as metadata.

Nothing is reported as exported before the written file has been loaded back and
run on a batch, and its output compared with the PyTorch module's. The file is
written under a temporary name and renamed only then, so a failure leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.config.experiment import DataConfig
from cnnzoo.errors import CnnzooError
from cnnzoo.layers.shapes import Volume
from cnnzoo.model.build import Network
from cnnzoo.runs import rundir
from cnnzoo.utils.files import check_writable

FORMATS = ("onnx", "torchscript", "exported")
METADATA_FILE = "cnnzoo.json"  # the metadata's name inside TorchScript and .pt2 archives
CHECK_BATCH = 4
# Where to turn when a layer does not export in a format.
OTHER_FORMATS = {
    "onnx": "try --format exported or torchscript",
    "torchscript": "try --format exported or onnx",
    "exported": "try --format onnx or torchscript",
}
# Largest output difference accepted, relative to the logits' scale: the exported graph
# may order float sums differently, nothing more.
TOLERANCE = 1e-3


class Preprocess(nn.Module):
    """What training did to the stored images, as graph ops: uint8 (N, C, H, W) ->
    the normalised float input of the network (data/pipeline.py: convert_images and
    BatchTransform.normalize)."""

    def __init__(self, data: DataConfig, stored: Volume, mean: list[float],
                 std: list[float]) -> None:
        super().__init__()
        self.to_channels = data.channels if data.channels not in (None, stored.depth) else None
        self.resize = tuple(data.resize) if data.resize is not None else None
        self.pad = int(data.pad)
        scale = [1 / (255 * s) for s in std] if data.normalize else [1 / 255] * len(std)
        shift = [m / s for m, s in zip(mean, std, strict=True)] if data.normalize else [0.0] * len(
            mean)
        self.register_buffer("scale", torch.tensor(scale).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift).view(1, -1, 1, 1))
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()  # (N, C, H, W), 0..255
        if self.to_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif self.to_channels == 1:
            x = (x * self.luma).sum(1, keepdim=True).round()
        if self.resize is not None:
            x = F.interpolate(x, size=self.resize, mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        return x * self.scale - self.shift


class WithPreprocessing(nn.Module):
    def __init__(self, preprocess: Preprocess, network: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(images))


def stored_volume(run: rundir.Run) -> Volume:
    """W x H x D of an image as the dataset stores it, before resize, pad and channels."""
    from cnnzoo.config.datasets import DATASETS

    info = DATASETS.get(run.config.data.dataset or "")
    if info is not None and info.volume is not None:
        return info.volume
    width, height, depth = run.info["input"]
    pad = run.config.data.pad
    return Volume(width - 2 * pad, height - 2 * pad, depth)


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    max_difference: float
    inputs: str  # what the graph takes


def export_run(run_dir: Path, fmt: str, out: Path, with_preprocessing: bool = False,
               say: Callable[[str], None] = print) -> Exported:
    """Export the trained network of `run_dir` as `fmt` into `out`, checked."""
    from cnnzoo.runs.load import load_run_model

    check_format(fmt)
    check_out_folder(out)
    check_writable(out)  # before the conversion, which can take minutes
    run = rundir.open_run(run_dir)
    network = load_run_model(run, torch.device("cpu"))
    network.to(memory_format=torch.contiguous_format)
    exportable = direct_equivalent(network, say)
    module: nn.Module = exportable
    reference: nn.Module = network
    volume = Volume(*run.info["input"])
    if with_preprocessing:
        stored = stored_volume(run)
        preprocess = Preprocess(run.config.data, stored, run.info["mean"], run.info["std"])
        module = WithPreprocessing(preprocess, exportable)
        reference = WithPreprocessing(preprocess, network)
        example = torch.randint(0, 256, (CHECK_BATCH, stored.depth, stored.height,
                                         stored.width), dtype=torch.uint8)
        inputs = f"uint8 images N x {stored.depth} x {stored.height} x {stored.width}, 0..255"
    else:
        example = torch.randn(CHECK_BATCH, volume.depth, volume.height, volume.width)
        inputs = (f"float32 N x {volume.depth} x {volume.height} x {volume.width}, "
                  "normalised as in training")
    module.eval()
    reference.eval()
    metadata = {
        "name": run.config.name, "classes": run.classes, "mean": run.info["mean"],
        "std": run.info["std"], "input": inputs, "preprocessing": with_preprocessing,
        "output": f"logits N x {len(run.classes)}",
    }
    difference = write_checked(module, exportable, example, fmt, out, metadata, reference)
    say(f"checked {out}: the largest difference from the PyTorch module on a batch of "
        f"{CHECK_BATCH} (and of 1) is {difference:.3g}")
    return Exported(out, fmt, difference, inputs)


def direct_equivalent(network: Network, say: Callable[[str], None] = print) -> Network:
    """`network`, or a copy whose `impl: fft` convs compute directly. The model language
    promises both give the same result up to rounding, and no exporter has the complex
    tensors of an FFT; the export's check compares against the FFT original."""
    import copy

    from cnnzoo.layers.modules import Conv2d
    from cnnzoo.model.inspect import layer_modules

    swapped = [plan for plan, module in layer_modules(network)
               if isinstance(module, Conv2d) and module.impl == "fft"]
    if not swapped:
        return network
    twin = copy.deepcopy(network)
    for module in twin.modules():
        if isinstance(module, Conv2d):
            module.impl = "direct"  # explicit padding stays: the same arithmetic but the product
    say(f"exporting {', '.join(p.where.label for p in swapped)} (impl: fft) as the direct "
        "convolution: the same result up to rounding, checked below")
    return twin


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise CnnzooError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise CnnzooError("exporting to ONNX needs onnx and onnxruntime: "
                              "pip install 'cnnzoo[onnx]'") from None


def check_out_folder(out: Path) -> Path:
    """The folder `out` goes into, which must exist (export makes no folders)."""
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise CnnzooError(f"--out {out}: the folder {directory} does not exist; create it or "
                          "choose another --out")
    return directory


def write_checked(module: nn.Module, network: Network, example: torch.Tensor, fmt: str,
                  out: Path, metadata: dict[str, Any],
                  reference: nn.Module | None = None) -> float:
    """Write `module` as `fmt` to a temporary file next to `out`, load it back, compare
    its output with `reference`'s (default: the module's) on `example` and on one image,
    then rename it to `out`. Returns the largest absolute difference."""
    directory = check_out_folder(out)
    # A folder of its own keeps out's name (torch.export wants .pt2) and a file mode
    # that follows the umask.
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=directory))
    except OSError as exc:
        raise CnnzooError(f"--out {out} cannot be written: {exc.strerror}; choose another "
                          "--out") from None
    tmp = staging / (f"{out.name}.pt2" if fmt == "exported" and out.suffix != ".pt2"
                     else out.name)
    try:
        try:
            WRITERS[fmt](module, example, tmp, metadata)
        except CnnzooError:
            raise
        except Exception as exc:  # every exporter fails in its own way; name the layer
            raise CnnzooError(failing_layer(network, fmt, exc)) from None
        run = LOADERS[fmt](tmp)
        difference = 0.0
        with torch.no_grad():
            for batch in (example, example[:1]):
                expected = (reference or module)(batch)
                got = run(batch)
                if got.shape != expected.shape:
                    raise CnnzooError(f"the exported {fmt} file gives {tuple(got.shape)} for a "
                                      f"batch of {len(batch)}, not {tuple(expected.shape)}")
                difference = max(difference, float((got - expected).abs().max()))
                bound = TOLERANCE * max(1.0, float(expected.abs().max()))
                if not difference <= bound:
                    raise CnnzooError(
                        f"the exported {fmt} file does not compute what the network does: "
                        f"its output differs by up to {difference:.3g} (more than {bound:.3g})")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return difference


def failing_layer(network: Network, fmt: str, error: Exception) -> str:
    """The message for an export that failed: the first layer that cannot be exported
    on its own, found by exporting each with the input it sees in a forward pass."""
    from cnnzoo.model.inspect import layer_modules

    seen: dict[int, torch.Tensor] = {}
    pairs = [(plan, module) for plan, module in layer_modules(network) if not plan.children]

    def keep(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.setdefault(id(module), args[0].detach())

    handles = [module.register_forward_pre_hook(keep) for _, module in pairs]
    try:
        with torch.no_grad():
            v = network.plan.input
            network(torch.randn(2, v.depth, v.height, v.width))
    finally:
        for handle in handles:
            handle.remove()
    for plan, module in pairs:
        if id(module) not in seen:
            continue
        problem = _layer_problem(module, seen[id(module)], fmt)
        if problem is not None:
            hint = (" (impl: direct computes the same and exports)"
                    if getattr(plan.spec, "impl", None) in ("fft", "auto") else "")
            return (f"{plan.where.label}: {plan.label} cannot be exported as {fmt}: {problem}"
                    f"{hint}; {OTHER_FORMATS[fmt]}")
    return f"the network cannot be exported as {fmt}: {_reason(error)}"


def _layer_problem(module: nn.Module, x: torch.Tensor, fmt: str) -> str | None:
    """Why one layer does not survive a round trip through `fmt`, or None. A tracer may
    write a layer without complaint and still record it wrongly, so it is run too."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"layer.{'pt2' if fmt == 'exported' else fmt}"
        try:
            WRITERS[fmt](module, x, path, {})
            with torch.no_grad():
                got, expected = LOADERS[fmt](path)(x), module(x)
        except Exception as exc:
            return _reason(exc)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
        return (f"the exported layer computes something else (output {tuple(got.shape)}, "
                f"expected {tuple(expected.shape)})")
    return None


def _reason(exc: Exception) -> str:
    """The line of an exporter's error that says why; a line that introduces what
    follows it (TorchScript's end in ':') loses its colon, the message goes on with ';'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "No ONNX function" in line or "Unsupported" in line or "not supported" in line:
            return line.replace("\x1b[96m", "").replace("\x1b[0m", "").rstrip(":")
    return lines[0].rstrip(":") if lines else type(exc).__name__


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=1 << 20)


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path,
                metadata: dict[str, Any]) -> None:
    import onnx

    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, verbose=False,
                                    input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: _batch_dim()},))
    model = program.model_proto
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path,
                       metadata: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


def _write_exported(module: nn.Module, example: torch.Tensor, path: Path,
                    metadata: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        # A capsule decoder keeps its last reconstruction as an attribute, for viz and the
        # loss; torch.export notes the assignment, but it is no part of the graph's output.
        warnings.filterwarnings("ignore", message="The tensor attribute .* was assigned "
                                "during export", category=UserWarning)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})


def _load_onnx(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _load_torchscript(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def _load_exported(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.export.load(str(path)).module()


WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, dict[str, Any]], None]] = {
    "onnx": _write_onnx, "torchscript": _write_torchscript, "exported": _write_exported,
}
LOADERS: dict[str, Callable[[Path], Callable[[torch.Tensor], torch.Tensor]]] = {
    "onnx": _load_onnx, "torchscript": _load_torchscript, "exported": _load_exported,
}
