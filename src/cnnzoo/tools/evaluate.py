"""`cnnzoo eval`: a trained run's weights evaluated on a split of its dataset (or each
seed's run of a `train --seeds` parent), and its per-image predictions written."""

from __future__ import annotations

from pathlib import Path

from cnnzoo.data.pipeline import load_dataset
from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.model.devices import resolve_device
from cnnzoo.runs import rundir
from cnnzoo.runs.load import load_run_model, run_transform, trained_precision
from cnnzoo.runs.predictions import write_predictions
from cnnzoo.runs.seeds import open_seed_parent
from cnnzoo.training.evaluation import Evaluation, evaluate


def evaluate_run(run_dir: Path, split: str = "test", data_root: str | None = None,
                 device: str = "auto", tta: str | None = None) -> tuple[Evaluation, list[str]]:
    """Evaluate a run's weights on a split of its dataset, with the test-time augmentation
    `tta` (None: the run's own train.tta)."""
    run = rundir.open_run(run_dir)
    config = run.config
    torch_device = resolve_device(device)
    model = load_run_model(run, torch_device)
    plan = model.plan
    splits = ("test",) if split == "test" else ("train", "val")
    data = load_dataset(config.data, plan.input, plan.output.depth, seed=config.train.seed,
                        data_root=data_root, splits=splits)
    if list(data.classes) != run.classes:
        raise CheckpointError(
            f"the dataset's classes {list(data.classes)} differ from those the run was trained "
            f"on {run.classes}"
        )
    chosen = {"test": data.test, "val": data.val, "train": data.train}[split]
    if chosen is None:
        raise CnnzooError(f"the run has no {split} split (data.val_split is 0)")
    precision = trained_precision(run, torch_device)
    result = evaluate(model, chosen.to(torch_device).eval_batches(config.train.eval_batch_size),
                      run_transform(run, torch_device), len(run.classes), torch_device,
                      precision, config.train.tta if tta is None else tta)
    return result, run.classes


def evaluate_seeds(parent_dir: Path, split: str = "test", data_root: str | None = None,
                   device: str = "auto", tta: str | None = None
                   ) -> tuple[list[tuple[int, Path, Evaluation]], list[str]]:
    """Every seed of a `train --seeds` parent evaluated as `evaluate_run` does:
    [(seed, run directory, evaluation)], and the class names."""
    parent = open_seed_parent(parent_dir)
    evaluated = []
    classes: list[str] = []
    for seed, run_dir in zip(parent.seeds, parent.runs, strict=True):
        result, classes = evaluate_run(run_dir, split, data_root, device, tta)
        evaluated.append((seed, run_dir, result))
    return evaluated, classes


def predictions_file(path: Path, seed: int | None) -> Path:
    """Where `eval --predictions PATH` writes: PATH itself, or for each seed of a parent
    PATH with -seed-S before its suffix."""
    return path if seed is None else path.with_name(f"{path.stem}-seed-{seed}{path.suffix}")


def write_eval_predictions(run_dir: Path, result: Evaluation, split: str, path: Path) -> None:
    """The evaluation's per-image predictions, written atomically to `path`."""
    if result.predictions is None:
        raise CnnzooError("the evaluation kept no per-image predictions")
    dataset = str(rundir.open_run(run_dir).info.get("dataset", "?"))
    write_predictions(path, result.predictions.to_file(split, dataset))
