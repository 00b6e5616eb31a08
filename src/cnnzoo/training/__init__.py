"""Training, one file per part:

    devices.py     device, precision, memory layout, autocast
    optim.py       optimizer and learning-rate schedule
    metrics.py     `EpochMetrics`, and the only place they are formatted
    evaluation.py  loss, accuracy and confusion matrix over a split
    progress.py    the bar, the epoch lines, the progress file, each step's loss
    stopping.py    why training stops early: a signal, a diverged loss
    state.py       where training is, and saving/restoring it (checkpoints)
    step.py        `TrainStep`: one optimisation step, the one place the loss is computed
    trainer.py     `Trainer`, whose phases have names, and `fit`
    runload.py     a trained run's network and data, for eval, predict and viz

This package imports nothing on its own, so `stopping` (which the CLI needs for
every command) can be imported without torch.
"""
