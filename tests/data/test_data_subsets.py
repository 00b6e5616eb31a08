"""Subsets that represent the data (limit_train, limit_test and the validation split
keep the class proportions), warnings for folder datasets that would silently lose a
class or a file, images/s from the images actually trained on, and a quiet Ctrl-C
while the command is still importing."""

from __future__ import annotations

import collections
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnnzoo
from cnnzoo.data.pipeline import load_dataset
from cnnzoo.data.subsets import class_shares, stratified_pick, stratified_split
from cnnzoo.training.trainer import fit
from tests.helpers.common import ROOT, write
from tests.helpers.datafiles import write_folder, write_mnist

FOLDER = """
model:
  layers:
    - input: {width: 16, height: 16, depth: 3}
    - fc: 3
data: {dataset: folder, root: ROOT, val_split: VAL, limit_train: LIMIT}
"""


@pytest.mark.parametrize(("counts", "n", "shares"), [
    ([10, 10, 10], 9, [3, 3, 3]),
    ([50, 30, 20], 10, [5, 3, 2]),
    ([7, 2, 1], 5, [4, 1, 0]),  # 3.5, 1.0, 0.5: the larger fraction ties go to the bigger
    ([30, 0, 3], 11, [10, 0, 1]),
])
def test_class_shares_by_largest_remainder(counts, n, shares):
    assert class_shares(counts, n) == shares


@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=8), data=st.data())
def test_class_shares_are_proportional_and_add_up(counts, data):
    n = data.draw(st.integers(0, sum(counts)))
    shares = class_shares(counts, n)
    assert sum(shares) == n
    for share, count in zip(shares, counts, strict=True):
        assert share <= count
        assert abs(share - n * count / max(1, sum(counts))) < 1


def test_a_pick_is_seeded_sorted_and_stratified():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    pick = stratified_pick(labels, 20, seed=3)
    assert pick == sorted(set(pick)) and len(pick) == 20
    assert collections.Counter(labels[pick].tolist()) == {0: 12, 1: 6, 2: 2}
    assert stratified_pick(labels, 20, seed=3) == pick
    assert stratified_pick(labels, 20, seed=4) != pick
    first, rest = stratified_split(labels, 20, seed=3)
    assert first == pick and sorted(first + rest) == list(range(100))


def _folder_data(tmp_path: Path, val: float, limit: int | str):
    root = write_folder(tmp_path / "images", per_class=10)  # 30 train images, class order
    text = (FOLDER.replace("ROOT", str(root)).replace("VAL", str(val))
            .replace("LIMIT", str(limit)))
    config = cnnzoo.parse_config(text)
    plan = cnnzoo.plan_experiment(config)
    return load_dataset(config.data, plan.input, 3, seed=0)


def _labels(split) -> list[int]:
    return sorted(collections.Counter(label for _, label in split.samples).values())


def test_limit_train_on_a_folder_dataset_keeps_every_class(tmp_path):
    data = _folder_data(tmp_path, 0, 9)
    assert _labels(data.train) == [3, 3, 3]  # the first 9 files would all be one class


def test_the_validation_split_of_a_folder_dataset_is_stratified(tmp_path):
    data = _folder_data(tmp_path, 0.3, "null")
    assert _labels(data.val) == [3, 3, 3] and _labels(data.train) == [7, 7, 7]
    assert not {p for p, _ in data.val.samples} & {p for p, _ in data.train.samples}


def test_limits_on_an_idx_dataset_keep_the_class_proportions(tmp_path):
    write_mnist(tmp_path, n_train=300, n_test=100)
    config = cnnzoo.load_config("lenet5", ["data.limit_train=60", "data.limit_test=20",
                                           "data.val_split=0.25"])
    plan = cnnzoo.plan_experiment(config)
    full = load_dataset(cnnzoo.load_config("lenet5", ["data.val_split=0"]).data, plan.input,
                        10, seed=0, data_root=str(tmp_path))
    data = load_dataset(config.data, plan.input, 10, seed=0, data_root=str(tmp_path))
    for whole, part, n in ((full.train, None, 60), (full.test, data.test, 20)):
        counts = np.bincount(whole.labels.numpy(), minlength=10)
        expected = class_shares(counts.tolist(), n)
        got = part.labels if part is not None else np.concatenate(
            [data.train.labels.numpy(), data.val.labels.numpy()])
        assert np.bincount(np.asarray(got), minlength=10).tolist() == expected
    val_counts = np.bincount(data.val.labels.numpy(), minlength=10)
    assert val_counts.tolist() == class_shares(class_shares(
        np.bincount(full.train.labels.numpy(), minlength=10).tolist(), 60), 15)


def test_an_empty_class_folder_and_a_broken_symlink_are_warned_about(tmp_path, capsys):
    root = write_folder(tmp_path / "images", per_class=4, with_test=False)
    (root / "train" / "zebra").mkdir()
    os.symlink(tmp_path / "gone.png", root / "train" / "cat" / "lost.png")
    config = cnnzoo.parse_config(FOLDER.replace("ROOT", str(root)).replace("VAL", "0")
                                .replace("LIMIT", "null").replace("fc: 3", "fc: 4"))
    load_dataset(config.data, cnnzoo.plan_experiment(config).input, 4, seed=0)
    err = capsys.readouterr().err
    assert f"warning: the class folder {root / 'train' / 'zebra'} has no images" in err
    assert f"warning: {root / 'train' / 'cat' / 'lost.png'} is a broken symbolic link" in err


def test_images_per_second_counts_the_images_trained_on(tmp_path):
    write_mnist(tmp_path / "data", n_train=120, n_test=20)
    config = cnnzoo.load_config(write(tmp_path / "c.yaml", """
model: {layers: [{input: {width: 28, height: 28, depth: 1}}, {fc: 10}]}
data: {dataset: fashion_mnist, val_split: 0}
train: {epochs: 2, batch_size: 500}
"""))
    result = fit(config, out=tmp_path / "run", data_root=str(tmp_path / "data"),
                 show_progress=False, callbacks=[])
    results = result.results
    # 2 epochs of one (short) batch of all 120 images, not 2 x 500
    assert results["images_per_s"] * results["train_seconds"] == pytest.approx(240, rel=1e-9)
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    for row in rows:
        rate, seconds = float(row["images_per_s"]), float(row["seconds"])
        # metrics.csv rounds seconds to 1 ms and images/s to 0.1: an epoch of 2 ms is
        # written with up to 25% error in its seconds, so the bound follows the rounding
        assert abs(rate * seconds - 120) <= rate * 0.0005 + seconds * 0.05 + 1.2


STOP_AT_TORCH = """
import sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupt())
"""


@pytest.mark.parametrize("how", ["module", "console_script", "library"])
def test_ctrl_c_while_importing_is_quiet_in_the_command(tmp_path, how):
    write(tmp_path / "sitecustomize.py", STOP_AT_TORCH)  # Ctrl-C exactly at `import torch`
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}"}
    # Commands that need torch (summary, zoo and `import cnnzoo` do not import it).
    run = str(tmp_path / "run")
    args = {
        "module": ["-m", "cnnzoo", "train", "-c", "lenet5", "-o", run],
        "console_script": ["-c", f"import sys; sys.argv = ['cnnzoo', 'train', '-c', 'lenet5', "
                           f"'-o', {run!r}]; from cnnzoo.cli.app import main; main()"],
        "library": ["-c", "import cnnzoo; cnnzoo.build_model('lenet5')"],
    }[how]
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    if how == "library":  # a program that imports cnnzoo keeps Python's own behaviour
        assert "KeyboardInterrupt" in proc.stderr and proc.returncode != 0
        return
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "interrupted\n"
