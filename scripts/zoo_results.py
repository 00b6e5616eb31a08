"""Measure the zoo: train every bundled config that fits Fashion-MNIST on this
machine, within a time budget per config, and write down what happened.

    .venv/bin/python scripts/zoo_results.py                         # all, 10 min each
    .venv/bin/python scripts/zoo_results.py --only lenet5 mlp --budget-minutes 5
    .venv/bin/python scripts/zoo_results.py --epochs 1 --set data.limit_train=2000 \\
        --results /tmp/zoo/results.md --configs-dir /tmp/zoo/configs   # a smoke run
    .venv/bin/python scripts/zoo_results.py --seeds 3 --runs runs/zoo-seeds --reuse --only lenet5
    .venv/bin/python scripts/zoo_results.py --add-seeds fashion-best=runs/zoo/fashion-best-seeds
    .venv/bin/python scripts/zoo_results.py --report-only        # docs/results.md, no training

It writes
    docs/results.md               params, mult-adds, test accuracy, train and wall time,
                                  date and the exact command of every config; the MLP vs
                                  locally-connected vs CNN comparison; the published
                                  Fashion-MNIST benchmark next to these numbers
    docs/accuracy-vs-params.png   test accuracy against parameters (log scale)
    configs/results.json          what `cnnzoo zoo` shows
    configs/NAME.yaml             the `# Measured here:` line of every config trained

Every number comes from a `cnnzoo train` run that this script started (seeds added
with --add-seeds: from the parent's, whose command the record keeps). Configs not
trained this time keep the record of their earlier run in configs/results.json,
with its own date, machine and command (--fresh drops those). The records are
written after every config, so an interrupted measurement keeps what it finished;
`--reuse` then takes a finished run in --runs whose config is the one it would
train, instead of training it again.

With --seeds N every config is trained with `cnnzoo train --seeds N` into one parent
(runs/zoo/NAME/seed-0 ...); its record is seed 0's run (accuracy, times, command,
shipped weights, with `seed: 0`) plus every seed's accuracy and times (`seeds`) and
their sd. `--reuse` records a finished parent of the same config and seeds as it is
and resumes an interrupted one (`cnnzoo train --resume PARENT`); a single run where
the parent would go is left alone and the config reported. --add-seeds
NAME=PARENT adds the seeds of a parent trained apart to NAME's record without
training; --report-only rewrites the report alone. docs/results.md then lists every
seed and marks which differences between configs are within the seeds' noise.

A config for another 10-class dataset is adapted with --set overrides that turn
Fashion-MNIST's 28x28x1 images into its input (CIFAR's 32x32x3: data.pad=2,
data.channels=3). The budget caps the epochs: a few steps are timed first, and a
config whose single epoch would not fit is listed as not measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cnnzoo.zoo.run import main

if __name__ == "__main__":
    sys.exit(main(root=Path(__file__).resolve().parents[1]))
