"""`cnnzoo predict`: classify image files with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnzoo import runs
from cnnzoo.data.pipeline import read_image
from cnnzoo.errors import CnnzooError
from cnnzoo.losses import create_loss
from cnnzoo.shapes import Volume
from cnnzoo.train import load_run_model, predict_logits, resolve_device, run_transform


def predict_files(run_dir: Path, images: list[Path], top: int = 3,
                  device: str = "auto") -> list[dict[str, Any]]:
    """Top-`top` classes with probabilities for each image, preprocessed as in training
    (converted to the input's channels, resized to its W x H, normalised).

    A run trained with a loss that fits no probabilities (svm) gets its raw class scores
    under `score` instead: a softmax of hinge-loss scores would look like a probability
    without being one."""
    run = runs.open_run(run_dir)
    for path in images:
        if not Path(path).is_file():
            raise CnnzooError(f"no image file {path}")
    torch_device = resolve_device(device)
    model = load_run_model(run, torch_device)
    volume = Volume(*run.info["input"])
    transform = run_transform(run, torch_device)
    batch = torch.stack([read_image(Path(p), volume) for p in images]).to(torch_device)
    with torch.no_grad():
        scores = predict_logits(model, transform.normalize(batch),
                                run.config.train.tta).float().cpu()
    label = "probability" if create_loss(run.config.train.loss).probabilities else "score"
    if label == "probability":
        scores = scores.softmax(1)
    k = min(top, scores.shape[1])
    results = []
    for path, p in zip(images, scores, strict=True):
        values, index = p.topk(k)
        results.append({
            "image": str(path),
            "top": [{"class": run.classes[i], "index": int(i), label: float(v)}
                    for v, i in zip(values.tolist(), index.tolist(), strict=True)],
        })
    return results
