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
    (converted to the input's channels, resized to its W x H, normalised); `score`
    instead of `probability` for a run trained with a loss whose scores are not
    probabilities (the margin loss: capsule lengths)."""
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
    # A loss such as the margin loss trains scores (capsule lengths) whose softmax is no
    # probability: those runs report the scores themselves.
    probabilistic = create_loss(run.config.train.loss).probabilities
    key = "probability" if probabilistic else "score"
    values_all = scores.softmax(1) if probabilistic else scores
    k = min(top, values_all.shape[1])
    results = []
    for path, p in zip(images, values_all, strict=True):
        values, index = p.topk(k)
        results.append({
            "image": str(path),
            "top": [{"class": run.classes[i], "index": int(i), key: float(v)}
                    for v, i in zip(values.tolist(), index.tolist(), strict=True)],
        })
    return results
