"""`cnnzoo predict`: classify image files with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnzoo import runs
from cnnzoo.data.pipeline import read_image
from cnnzoo.errors import CnnzooError
from cnnzoo.shapes import Volume
from cnnzoo.training.devices import resolve_device
from cnnzoo.training.evaluation import predict_logits
from cnnzoo.training.runload import load_run_model, run_transform


def predict_files(run_dir: Path, images: list[Path], top: int = 3,
                  device: str = "auto") -> list[dict[str, Any]]:
    """Top-`top` classes with probabilities for each image, preprocessed as in training
    (converted to the input's channels, resized to its W x H, normalised)."""
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
        probs = predict_logits(model, transform.normalize(batch),
                               run.config.train.tta).float().softmax(1).cpu()
    k = min(top, probs.shape[1])
    results = []
    for path, p in zip(images, probs, strict=True):
        values, index = p.topk(k)
        results.append({
            "image": str(path),
            "top": [{"class": run.classes[i], "index": int(i), "probability": float(v)}
                    for v, i in zip(values.tolist(), index.tolist(), strict=True)],
        })
    return results
