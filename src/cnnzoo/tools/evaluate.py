"""`cnnzoo eval`: a trained run's weights evaluated on a split of its dataset."""

from __future__ import annotations

from pathlib import Path

from cnnzoo.data.pipeline import load_dataset
from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.model.devices import resolve_device
from cnnzoo.runs import rundir
from cnnzoo.runs.load import load_run_model, run_transform, trained_precision
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
