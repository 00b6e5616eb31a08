"""`cnnzoo predict`: classify image files with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnzoo.data.images import read_image
from cnnzoo.errors import CnnzooError, DataError
from cnnzoo.layers.shapes import Volume
from cnnzoo.model.devices import resolve_device
from cnnzoo.runs import rundir
from cnnzoo.runs.load import load_run_model, run_transform
from cnnzoo.training.evaluation import predict_logits
from cnnzoo.training.losses import create_loss


def predict_files(run_dir: Path, images: list[Path], top: int = 3,
                  device: str = "auto") -> list[dict[str, Any]]:
    """Top-`top` classes with probabilities for each image, preprocessed as in training
    (converted to the input's channels, resized to its W x H, normalised). An image
    that cannot be read gets {"image", "error"} in its place; the others are answered.

    A run trained with a loss that fits no probabilities (svm, margin) gets its raw class
    scores under `score` instead: a softmax of such scores would look like a probability
    without being one."""
    run = rundir.open_run(run_dir)
    torch_device = resolve_device(device)
    model = load_run_model(run, torch_device)
    volume = Volume(*run.info["input"])
    transform = run_transform(run, torch_device)
    pixels: list[torch.Tensor] = []
    errors: dict[int, str] = {}
    for i, path in enumerate(images):
        try:
            if not Path(path).is_file():
                raise DataError(f"no image file {path}")
            pixels.append(read_image(Path(path), volume))
        except DataError as exc:
            errors[i] = str(exc)
    label = "probability" if create_loss(run.config.train.loss).probabilities else "score"
    answers = iter(())
    if pixels:
        batch = torch.stack(pixels).to(torch_device)
        with torch.no_grad():
            scores = predict_logits(model, transform.normalize(batch), run.config.train.tta,
                                    transform.neg_shift).float().cpu()
        answers = iter(scores.softmax(1) if label == "probability" else scores)
    results: list[dict[str, Any]] = []
    for i, path in enumerate(images):
        if i in errors:
            results.append({"image": str(path), "error": errors[i]})
            continue
        values, index = next(answers).topk(min(top, len(run.classes)))
        results.append({
            "image": str(path),
            "top": [{"class": run.classes[k], "index": int(k), label: float(v)}
                    for v, k in zip(values.tolist(), index.tolist(), strict=True)],
        })
    return results


def unreadable(results: list[dict[str, Any]]) -> CnnzooError | None:
    """The error to exit with when some images could not be read, naming them all."""
    bad = [item["error"] for item in results if "error" in item]
    if not bad:
        return None
    if len(results) == 1:
        return CnnzooError(bad[0])
    return CnnzooError(f"{'; '.join(bad)} ({len(bad)} of {len(results)} images could not "
                       "be read; the others are answered)")
