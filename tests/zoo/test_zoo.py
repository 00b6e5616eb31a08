"""The zoo: the classic configs against hand-written twins and their published
parameter counts; `cnnzoo zoo`, `compare` and `viz` end to end on runs trained on
fake files; the pictures and event files a run leaves; and the report writer of
scripts/zoo_results.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import cnnzoo
from cnnzoo.model.inspect import first_layer_filters, layer_modules
from cnnzoo.tools.viz import activation_volumes
from cnnzoo.training.trainer import fit
from cnnzoo.utils import pictures
from tests.helpers.common import CONFIGS, ROOT, slow_cases, write
from tests.helpers.datafiles import class_images, write_mnist
from tests.model.test_handwritten import BasicBlock

# ---- the classic configs, written by hand


def _pytorch_mnist() -> nn.Module:
    """pytorch/examples mnist/main.py, class Net, as a Sequential."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(128, 10),
    )


def _cuda_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, 1),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, 1),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
    )


def _vgg11_bn() -> nn.Module:
    """torchvision's VGG-11-BN feature stack with the CIFAR head: one fc."""
    return nn.Sequential(torchvision.models.vgg11_bn(weights=None).features, nn.Flatten(),
                         nn.Linear(512, 10))


def _nin() -> nn.Module:
    def block(cin: int, widths: tuple[int, int, int], kernel: int) -> list[nn.Module]:
        a, b, c = widths
        return [nn.Conv2d(cin, a, kernel, padding=kernel // 2), nn.ReLU(), nn.Conv2d(a, b, 1),
                nn.ReLU(), nn.Conv2d(b, c, 1), nn.ReLU()]

    return nn.Sequential(
        *block(3, (192, 160, 96), 5), nn.MaxPool2d(3, 2, 1), nn.Dropout(0.5),
        *block(96, (192, 192, 192), 5), nn.AvgPool2d(3, 2, 1), nn.Dropout(0.5),
        *block(192, (192, 192, 10), 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


def _all_cnn_c() -> nn.Module:
    def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> list:
        return [nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU()]

    return nn.Sequential(
        nn.Dropout(0.2), *conv(3, 96), *conv(96, 96), *conv(96, 96, stride=2), nn.Dropout(0.5),
        *conv(96, 192), *conv(192, 192), *conv(192, 192, stride=2), nn.Dropout(0.5),
        *conv(192, 192, padding=0), *conv(192, 192, 1, padding=0), nn.Conv2d(192, 10, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


class ResNet20(nn.Module):
    """He et al. 2016, section 4.2 with n = 3, projection shortcuts (option B)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, width, stride if i == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


TWINS = {
    "pytorch-mnist": (_pytorch_mnist, (1, 28, 28)),
    "cuda-convnet": (_cuda_convnet, (3, 32, 32)),
    "vgg11-bn": (_vgg11_bn, (3, 32, 32)),
    "nin": (_nin, (3, 32, 32)),
    "all-cnn-c": (_all_cnn_c, (3, 32, 32)),
    "resnet20": (ResNet20, (3, 32, 32)),
}


@pytest.mark.parametrize("name", slow_cases(list(TWINS), "vgg11-bn"))
def test_classic_config_equals_its_hand_written_twin(name):
    reference_cls, shape = TWINS[name]
    torch.manual_seed(0)
    reference = reference_cls().eval()
    model = cnnzoo.build_model(name).eval()
    ours, theirs = list(model.parameters()), list(reference.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            a.copy_(b)
        for a, b in zip(model.buffers(), reference.buffers(), strict=True):
            a.copy_(b.float() * 0.5 + 0.5 if a.is_floating_point() else b)
            b.copy_(a)  # non-trivial running statistics, the same on both sides
    x = torch.randn(2, *shape)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


# The published counts: exact where the source counts exactly, else its rounding.
PUBLISHED_PARAMS = [
    ("lenet5", 61_706, 0),  # the classic count of LeNet-5's modern form
    ("pytorch-mnist", 1_199_882, 0),  # pytorch/examples mnist Net
    ("cuda-convnet", 89_578, 0),  # Caffe's cifar10_full, the same net with LRN (no params)
    ("vgg11-bn", 9_231_114, 0),  # torchvision vgg11_bn features + Linear(512, 10)
    ("resnet20", 270_000, -4),  # He et al. 2016, Table 6: 0.27M
    ("all-cnn-c", 1_400_000, -5),  # Springenberg et al. 2015: 1.4M
    ("nin", 970_000, -4),  # the NIN CIFAR-10 Caffe model: 0.97M
    ("capsnet", 8_215_568, 0),  # Sabour et al. 2017 with the decoder, counted by hand
]


@pytest.mark.parametrize(("name", "published", "digits"), PUBLISHED_PARAMS,
                         ids=[p[0] for p in PUBLISHED_PARAMS])
def test_parameter_count_matches_the_published_one(name, published, digits):
    params = cnnzoo.plan_experiment(cnnzoo.load_config(name)).total_params
    assert round(params, digits) == published


def _wide_resnet_28_10() -> nn.Module:
    """WRN-28-10 (Zagoruyko and Komodakis 2016) for 28x28x1 images and 10 classes:
    4 pre-activation blocks per group, widths 160, 320, 640, 1x1 projections where the
    width changes."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        parts = [nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                 nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, padding=1, bias=False)]
        return parts + ([nn.Conv2d(cin, cout, 1, bias=False)] if cin != cout else [])

    layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, padding=1, bias=False)]
    width = 16
    for group_width in (160, 320, 640):
        for _ in range(4):
            layers += block(width, group_width)
            width = group_width
    return nn.Sequential(*layers, nn.BatchNorm2d(width), nn.Linear(width, 10))


def test_published_rows_parameter_counts_match_their_architectures(script):
    """The per-parameter comparison's counts, from the named architectures built in torch."""
    resnet18 = torchvision.models.resnet18(num_classes=10)
    resnet18.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    tf_tutorial = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2),
                                nn.Linear(7 * 7 * 64, 1024), nn.Linear(1024, 10))
    mlp = nn.Sequential(nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 100),
                        nn.Linear(100, 10))
    built = [mlp, tf_tutorial, resnet18, _wide_resnet_28_10()]

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    rows = script.measure.PUBLISHED
    assert [row.params for row in rows[:4]] == [count(m) for m in built]
    assert rows[4].params == 8_000_000  # the CapsNet row's own figure


def test_resnet20_differs_from_the_paper_only_by_its_projection_shortcuts():
    plan = cnnzoo.plan_experiment(cnnzoo.load_config("resnet20"))
    shortcuts = sum(p.params for p in plan.walk() if p.label.startswith("shortcut "))
    # Option A (the paper's CIFAR nets): 269,722 parameters, no shortcut weights.
    assert plan.total_params - shortcuts == 269_722
    assert shortcuts == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_header_has_one_measured_line(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert sum(line.startswith("# Measured here:") for line in header) == 1
    assert "# Measured here:" not in "\n".join(path.read_text().splitlines()[len(header):])


# ---- runs trained on fake files

SMALL = """
name: small
model:
  layers:
    - conv: {filters: 8, kernel: 3, padding: same, activation: relu}
    - pool: 4
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}}
"""
DENSE = """
name: dense
model:
  layers:
    - fc: {units: 16, activation: relu}
    - fc: 10
data: {dataset: fashion_mnist, val_split: 0.1}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.01}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs on fake Fashion-MNIST files, with the default callbacks."""
    base = tmp_path_factory.mktemp("zoo")
    write_mnist(base / "data")
    paths = {"base": base, "data": base / "data"}
    for text in (SMALL, DENSE):
        config = cnnzoo.parse_config(text)
        out = base / "runs" / config.name
        fit(config, out=out, data_root=str(base / "data"), show_progress=False)
        paths[config.name] = out
    return paths


def image_file(tmp_path: Path, label: int = 7) -> Path:
    path = tmp_path / f"item{label}.png"
    Image.fromarray(class_images(np.array([label]), 28, 1, seed=5)[0, :, :, 0]).save(path)
    return path


def assert_png(path: Path, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """A complete PNG with something drawn on it."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes every row: a truncated file fails here
        assert img.mode == "RGBA"
        if size is not None:
            assert img.size == size
        assert np.asarray(img.convert("L")).std() > 1.0
        return img.size


@pytest.mark.slow
def test_training_writes_curves_confusion_and_filters(trained):
    for name in ("curves.png", "confusion.png", "filters.png"):
        assert_png(trained["small"] / name)
    assert_png(trained["small"] / "curves.png", (1000, 400))
    assert_png(trained["dense"] / "filters.png")  # the fc's rows as 28x28 images


def test_a_failing_picture_does_not_stop_training(tmp_path, cli, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.setattr(pictures, "confusion_figure", broken)
    monkeypatch.setattr("cnnzoo.training.callbacks.tensorboard_available", lambda: False)
    write_mnist(tmp_path / "data", n_train=200, n_test=50)
    config = write(tmp_path / "small.yaml", SMALL.replace("epochs: 2", "epochs: 1"))
    result = cli("train", "-c", config, "--data-root", tmp_path / "data", "-o", tmp_path / "r",
                 "-q")
    assert result.code == 0, result.err
    assert (tmp_path / "r" / "results.json").is_file()
    assert "warning: confusion.png was not written: RuntimeError: no ink" in result.err
    assert_png(tmp_path / "r" / "curves.png")
    assert not (tmp_path / "r" / "confusion.png").exists()
    assert not list((tmp_path / "r").glob("events.out.tfevents*"))  # no tensorboard: no files


def test_curves_are_redrawn_at_most_every_redraw_seconds(monkeypatch):
    from cnnzoo.training.callbacks import Pictures

    drawn = []
    monkeypatch.setattr(Pictures, "_curves", staticmethod(drawn.append))
    throttled = Pictures(redraw_seconds=3600)
    for epoch in range(3):
        throttled.on_epoch_end("first", epoch, [], None)
    assert drawn == []
    throttled.drawn_at -= 3600  # an hour of training later
    for epoch in range(3):
        throttled.on_epoch_end("later", epoch, [], None)
    assert drawn == ["later"]
    every = Pictures(redraw_seconds=0)
    for epoch in range(3):
        every.on_epoch_end("each", epoch, [], None)
    assert drawn == ["later", "each", "each", "each"]


def test_tensorboard_event_files(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(trained["small"].glob("events.out.tfevents*"))
    events = EventAccumulator(str(trained["small"]), size_guidance={"images": 0})
    events.Reload()
    results = json.loads((trained["small"] / "results.json").read_text())
    val = events.Scalars("accuracy/val")
    assert [e.step for e in val] == [1, 2]
    assert events.Scalars("accuracy/test")[0].value == pytest.approx(results["test_accuracy"])
    assert set(events.Tags()["images"]) == {"curves", "confusion", "filters"}


# ---- cnnzoo zoo


def test_zoo_lists_every_bundled_config(cli):
    result = cli("zoo", "--json")
    assert result.code == 0, result.err
    listed = {e["name"]: e for e in json.loads(result.out)}
    assert set(listed) == {p.stem for p in CONFIGS}
    for path in CONFIGS:
        plan = cnnzoo.plan_experiment(cnnzoo.load_config(path))
        assert (listed[path.stem]["params"], listed[path.stem]["macs"]) == (
            plan.total_params, plan.total_macs)
    table = cli("zoo")
    assert table.code == 0 and "61,706" in table.out and "resnet20" in table.out


@pytest.fixture
def bundled_copy(tmp_path, monkeypatch) -> Path:
    """Four bundled configs in a folder that stands in for the installed ones."""
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in ("lenet5", "mlp", "cs231n-simple", "resnet-small"):
        shutil.copy(ROOT / "configs" / f"{name}.yaml", folder)
    monkeypatch.setattr("cnnzoo.config.bundled.BUNDLED_DIRS", (folder,))
    return folder


def test_zoo_shows_measured_stale_and_missing_results(cli, bundled_copy):
    lenet = cnnzoo.plan_experiment(cnnzoo.load_config(bundled_copy / "lenet5.yaml"))
    simple = cnnzoo.plan_experiment(cnnzoo.load_config(bundled_copy / "cs231n-simple.yaml"))
    from cnnzoo.config.bundled import write_measured

    write_measured({
        "lenet5": {"test_accuracy": 0.9081, "params": lenet.total_params,
                   "macs": lenet.total_macs, "dataset": "fashion_mnist", "epochs": 10,
                   "date": "2025-01-02"},
        "mlp": {"test_accuracy": 0.88, "params": 1, "macs": 1, "dataset": "fashion_mnist"},
        "cs231n-simple": {"test_accuracy": 0.5, "params": simple.total_params,
                          "macs": simple.total_macs, "dataset": "fashion_mnist", "epochs": 1,
                          "adapted": ["data.pad=2"], "train_images": 1_800},
    }, bundled_copy)
    result = cli("zoo")
    assert result.code == 0, result.err
    rows = {line.split()[0]: line for line in result.out.splitlines()[1:]}
    assert set(rows) == {"lenet5", "mlp", "cs231n-simple", "resnet-small"}
    assert "90.81%" in rows["lenet5"] and "fashion_mnist, 10 epochs, 2025-01-02" in rows["lenet5"]
    assert "stale" in rows["mlp"] and "88.00%" not in rows["mlp"]
    assert "50.00%  fashion_mnist (adapted), 1 epoch, 1,800 training images" in rows[
        "cs231n-simple"]
    assert "not yet measured" in rows["resnet-small"]
    data = {e["name"]: e for e in json.loads(cli("zoo", "--json").out)}
    assert data["lenet5"]["test_accuracy"] == 0.9081 and data["mlp"]["test_accuracy"] is None


def test_zoo_with_a_damaged_results_file_is_one_clear_error(cli, bundled_copy):
    (bundled_copy / "results.json").write_text("{not json")
    result = cli("zoo")
    assert result.code == 2
    assert "cannot read the measured results" in result.err and "Traceback" not in result.err


# ---- cnnzoo compare


def test_compare_table_and_plot(trained, cli, tmp_path):
    plot = tmp_path / "cmp.png"
    result = cli("compare", trained["small"], trained["dense"], "--plot", plot)
    assert result.code == 0, result.err
    for name in ("small", "dense"):
        results = json.loads((trained[name] / "results.json").read_text())
        row = next(line for line in result.out.splitlines() if line.startswith(name + " "))
        assert f"{results['params']:,}" in row and f"{results['macs']:,}" in row
        assert f"{results['test_accuracy']:.2%}" in row and results["device"] in row
    assert f"plot: {plot}" in result.out
    assert_png(plot, (800, 550))


def test_compare_expands_a_quoted_pattern(trained, cli, tmp_path):
    pattern = str(trained["base"] / "runs" / "*")
    result = cli("compare", pattern, "--json", "--no-plot")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert sorted(r["name"] for r in data["runs"]) == ["dense", "small"]
    assert data["plot"] is None


def test_compare_shows_an_unfinished_run(trained, cli, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained["small"], unfinished)
    (unfinished / "results.json").unlink()
    result = cli("compare", trained["small"], unfinished, "--json", "--plot", tmp_path / "p.png")
    assert result.code == 0, result.err
    runs = json.loads(result.out)["runs"]
    assert [r["label"] for r in runs] == ["small", "unfinished"]  # same name: the folders
    assert runs[1]["test_accuracy"] is None and runs[1]["params"] == runs[0]["params"]
    assert_png(tmp_path / "p.png")


@pytest.mark.parametrize(("target", "message"), [
    ("nowhere", "no run directory"),
    ("data", "is not a cnnzoo run"),
    ("data/*", "no cnnzoo runs match"),
    ("nothing-*", "no cnnzoo runs match"),
])
def test_compare_refuses_what_is_not_a_run(trained, cli, tmp_path, monkeypatch, target, message):
    monkeypatch.chdir(tmp_path)
    result = cli("compare", trained["small"], str(trained["base"] / target))
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "compare.png").exists()


# ---- cnnzoo viz


def test_viz_one_picture(trained, cli, tmp_path):
    out = tmp_path / "volumes.png"
    result = cli("viz", trained["small"], "--image", image_file(tmp_path), "--out", out)
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    assert_png(out, (1080, 380))  # input, conv and pool panels in one row


def test_viz_one_picture_per_layer(trained, cli, tmp_path):
    out = tmp_path / "volumes"
    result = cli("viz", trained["small"], "--image", image_file(tmp_path), "-o", out)
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["00-input.png", "01-conv-1.png",
                                                     "02-pool-3.png"]
    for path in out.iterdir():
        assert_png(path)


def test_viz_default_output_is_in_the_run(trained, cli, tmp_path):
    result = cli("viz", trained["small"], "-i", image_file(tmp_path, 3))
    assert result.code == 0, result.err
    assert_png(trained["small"] / "activations-item3.png")


@pytest.mark.parametrize(("run", "image", "out", "message"), [
    ("small", "missing.png", None, "no image file"),
    ("small", None, "volumes.txt", "give a .png file or a directory"),
    ("dense", None, None, "has no conv, local or pool layer"),
    ("data", None, None, "is not a cnnzoo run"),
])
def test_viz_errors(trained, cli, tmp_path, run, image, out, message):
    args = ["viz", trained[run], "--image", tmp_path / image if image else image_file(tmp_path)]
    if out:
        args += ["--out", tmp_path / out]
    result = cli(*args)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_activation_volumes_are_the_layers_outputs():
    plan = cnnzoo.plan_experiment(cnnzoo.parse_config(SMALL))
    model = cnnzoo.build_model(plan).eval()
    x = torch.randn(1, 1, 28, 28)
    volumes = activation_volumes(model, x)
    conv = model.layers[1]
    expected_conv = F.conv2d(x, conv.weight, conv.bias, padding=1)[0]
    expected_pool = F.max_pool2d(F.relu(expected_conv), 4)
    assert [p.index for p, _ in volumes] == ["1", "3"]
    np.testing.assert_allclose(volumes[0][1].values, expected_conv.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(volumes[1][1].values, expected_pool.detach().numpy(), atol=1e-6)
    assert volumes[1][1].title == "3 pool max 4x4/4\n7x7x8"


def test_activation_volumes_reach_into_residual_and_repeat():
    plan = cnnzoo.plan_experiment(cnnzoo.load_config("resnet-small"))
    model = cnnzoo.build_model(plan)
    volumes = activation_volumes(model, torch.randn(1, 1, 28, 28))
    expected = [p for p in plan.walk() if p.type_name in ("conv", "pool")]
    assert [p.index for p, _ in volumes] == [p.index for p in expected]
    assert len(expected) == 10  # stem, 2 per block x 4 blocks, 1 shortcut; no pools
    for layer, volume in volumes:
        assert volume.values.shape == layer.output.torch_shape()
    assert model.training  # put back as it was


def test_layer_modules_pair_every_layer_with_its_module():
    model = cnnzoo.build_model("resnet-small")
    pairs = layer_modules(model)
    assert [p.index for p, _ in pairs] == [p.index for p in model.plan.walk()]
    for plan, module in pairs:
        assert sum(p.numel() for p in module.parameters()) == plan.params, plan.label


def test_first_layer_filters():
    conv_net = cnnzoo.build_model(cnnzoo.parse_config(SMALL))
    plan, weights = first_layer_filters(conv_net)
    assert plan.index == "1"
    np.testing.assert_array_equal(weights, conv_net.layers[1].weight.detach().numpy())
    dense = cnnzoo.build_model(cnnzoo.parse_config(DENSE))
    plan, weights = first_layer_filters(dense)
    assert weights.shape == (16, 1, 28, 28)
    np.testing.assert_array_equal(weights[5, 0], dense.layers[1].weight[5].view(28, 28).detach())
    local = cnnzoo.build_model("cnn-small-local")
    plan, weights = first_layer_filters(local)
    assert weights.shape == (16, 1, 5, 5)
    # local weights are (out_h, out_w, F, kh, kw, C): the centre bank, channels first
    centre = local.layers[1].weight[14, 14].permute(0, 3, 1, 2)
    np.testing.assert_array_equal(weights, centre.detach().numpy())
    flat = "model: {layers: [input: {width: 28, height: 28, depth: 1}, flatten, fc: 10]}"
    assert first_layer_filters(cnnzoo.build_model(cnnzoo.parse_config(flat))) is None


# ---- pictures


def test_mosaic_places_tiles_row_by_row():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    grid = pictures.mosaic(tiles, columns=2, gap=1, fill=-1)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1)
    for i in range(5):
        r, c = divmod(i, 2)
        np.testing.assert_array_equal(grid[r * 3: r * 3 + 2, c * 4: c * 4 + 3], tiles[i])
    assert (grid[2, :] == -1).all() and (grid[:, 3] == -1).all()
    assert (grid[6:, 4:] == -1).all()  # the sixth cell is empty
    assert pictures.mosaic(np.zeros((16, 4, 4))).shape == (4 * 5 - 1, 4 * 5 - 1)


def test_filter_tiles_scale_each_filter():
    rng = np.random.default_rng(0)
    rgb = pictures.filter_tiles(rng.normal(size=(4, 3, 5, 5)))
    assert rgb.shape == (4, 5, 5, 3)
    np.testing.assert_allclose(rgb.min(axis=(1, 2, 3)), 0)
    np.testing.assert_allclose(rgb.max(axis=(1, 2, 3)), 1)
    grey = pictures.filter_tiles(rng.normal(size=(4, 2, 3, 3)))
    assert grey.shape == (8, 3, 3, 3) and (grey[..., 0] == grey[..., 2]).all()
    weights = np.array([[[[1.0, 3.0], [5.0, 3.0]]]])
    np.testing.assert_allclose(pictures.filter_tiles(weights)[0, ..., 0], [[0, 0.5], [1, 0.5]])


def test_volume_grid_keeps_dead_slices_dark():
    volume = np.stack([np.zeros((3, 3)), np.full((3, 3), 2.0), np.eye(3) * 4])
    grid = pictures.volume_grid(volume)
    assert grid.shape == (7, 7)
    np.testing.assert_array_equal(grid[0:3, 0:3], 0)
    np.testing.assert_array_equal(grid[0:3, 4:7], 0.5)
    np.testing.assert_array_equal(grid[4:7, 0:3], np.eye(3))
    assert np.isnan(grid[3]).all()


def test_confusion_figure_title_and_labels():
    confusion = np.array([[3, 1], [0, 4]])
    fig = pictures.confusion_figure(confusion, ["cat", "dog"], "pets")
    ax = fig.axes[0]
    assert ax.get_title() == "pets: accuracy 87.50% on 8 images"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "3", "4"]


def test_curves_figure_plots_each_split():
    rows = [{"epoch": e, "split": s, "loss": 1 / e, "accuracy": 0.5 + e / 10}
            for e in (1, 2, 3) for s in ("train", "val")]
    rows.append({"epoch": 3, "split": "test", "loss": 0.4, "accuracy": 0.81})
    loss_ax, acc_ax = pictures.curves_figure(rows, "run").axes
    lines = {line.get_label(): line for line in acc_ax.get_lines()}
    np.testing.assert_allclose(lines["val"].get_ydata(), [60, 70, 80])
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "val"]
    assert "test 81.00" in [t.get_text() for t in acc_ax.get_legend().get_texts()]


def test_accuracy_params_figure():
    points = [pictures.Point("a", 1_000, 0.8), pictures.Point("b", 1_000_000, 0.9, True),
              pictures.Point("c", 20_000, 0.85, True)]
    ax = pictures.accuracy_params_figure(points, "t", highlight_label="trio").axes[0]
    assert ax.get_xscale() == "log"
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "c"]
    joined = ax.get_lines()[0]
    np.testing.assert_array_equal(joined.get_xdata(), [20_000, 1_000_000])  # by size
    assert [pictures.short_count(v) for v in (999, 1500, 2_000_000)] == ["999", "1.5k", "2M"]


# ---- scripts/zoo_results.py


@pytest.fixture
def script():
    """The zoo measurement that scripts/zoo_results.py drives, as one namespace."""
    from cnnzoo.zoo import measure as zoo_measure
    from cnnzoo.zoo import report as zoo_report
    from cnnzoo.zoo import run as zoo_run

    return SimpleNamespace(measure=zoo_measure, report=zoo_report, run=zoo_run)


def _overrides(script, text: str) -> list[str]:
    config = cnnzoo.parse_config(text)
    return script.measure.fashion_overrides(config, cnnzoo.plan_experiment(config))


def test_configs_are_adapted_to_fashion_mnist(script, tmp_path):
    assert _overrides(script, (ROOT / "configs" / "lenet5.yaml").read_text()) == []
    assert _overrides(script, (ROOT / "configs" / "cs231n-simple.yaml").read_text()) == [
        "data.dataset=fashion_mnist", "data.pad=2", "data.channels=3"]
    odd = ("model: {layers: [input: {width: 20, height: 24, depth: 3}, fc: 10]}\n"
           "data: {dataset: cifar10, resize: [24, 20]}\n")
    assert _overrides(script, odd) == [
        "data.dataset=fashion_mnist", "data.resize=[24,20]", "data.channels=3"]
    padded = ("model: {layers: [input: {width: 32, height: 32, depth: 1}, fc: 10]}\n"
              "data: {dataset: mnist, pad: 2}")
    assert _overrides(script, padded) == ["data.dataset=fashion_mnist"]
    with pytest.raises(script.measure.Skip, match="100 classes"):
        _overrides(script, "model: {layers: [fc: 100]}\ndata: {dataset: cifar100}")
    path = write(tmp_path / "odd.yaml", odd)
    adapted = script.measure.adapted_config(path, ["train.epochs=1"])
    assert adapted.plan.input == cnnzoo.layers.shapes.Volume(20, 24, 3)
    assert adapted.config.data.dataset == "fashion_mnist" and adapted.config.train.epochs == 1
    assert adapted.sets[-1] == "train.epochs=1" and "train.epochs=1" not in adapted.adaptation


def test_epochs_are_capped_by_the_budget(script):
    config = cnnzoo.parse_config(SMALL, ["data.limit_train=2000", "data.limit_test=1000"])
    work = script.measure.Workload.of(config)
    assert (work.train_images, work.val_images, work.test_images) == (1800, 200, 1000)
    per_epoch = 1800 // 32 * 0.1 + 200 / 32 * 0.1 / 3
    test = 1000 / 32 * 0.1 / 3
    assert work.seconds(3, 0.1) == pytest.approx(3 * per_epoch + test)
    assert script.measure.choose_epochs(10, work, 0.1, 3 * per_epoch + test + 0.01) == 3
    assert script.measure.choose_epochs(2, work, 0.1, 1000.0) == 2
    assert script.measure.choose_epochs(10, work, 0.1, None) == 10
    with pytest.raises(script.measure.Skip, match=r"over the budget of 5\.0s"):
        script.measure.choose_epochs(10, work, 0.1, 5.0)


RECORD = {
    "test_accuracy": 0.9081, "test_loss": 0.26, "dataset": "fashion_mnist", "epochs": 10,
    "train_images": 54_000, "test_images": 10_000, "train_seconds": 62.4, "wall_seconds": 75.0,
    "params": 61_706, "macs": 416_520,
    "device": "cpu (2 threads)", "machine": "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1",
    "date": "2025-01-02", "adapted": [],
    "command": "cnnzoo train --config lenet5 --device cpu --out runs/zoo-1/lenet5",
}


def test_a_record_counts_the_epochs_a_time_budget_let_run(script):
    results = {"test_accuracy": 0.89, "test_loss": 0.08, "dataset": "fashion_mnist",
               "test_samples": 10_000, "train_seconds": 3328.6, "params": 1, "macs": 1,
               "device": "cpu (2 threads)", "epochs": 50, "epochs_run": 7.454}
    info = {"train_samples": 54_000}

    def record(**changes):
        machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1"}
        return script.measure.make_record({**results, **changes}, info, ["train"], [], 3487.0,
                                          machine, "2026-12-01")

    assert record()["epochs"] == 7.45
    assert record(epochs_run=50.0)["epochs"] == 50  # all of them: the configured number
    assert record(epochs_run=None)["epochs"] == 50  # a record from before epochs_run
    assert "after 7.45 epochs (" in " ".join(script.measure.measured_lines(record()))


def test_measured_line_is_rewritten_in_place(script, tmp_path):
    original = (ROOT / "configs" / "lenet5.yaml").read_text()
    lines = script.measure.measured_lines(RECORD)
    assert lines[0].startswith("# Measured here: 90.81% test accuracy")
    def sentence(lines: list[str]) -> str:
        return " ".join(line.removeprefix("# Measured here: ").removeprefix("#   ")
                        for line in lines[:-1])

    assert sentence(lines) == ("90.81% test accuracy on Fashion-MNIST after 10 epochs (1m02s of "
                        "training on Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1; "
                        "2025-01-02):")
    small = script.measure.measured_lines({**RECORD, "epochs": 1, "train_images": 1_800,
                                   "test_images": 1_000, "adapted": ["data.pad=2"]})
    assert "Fashion-MNIST (adapted: data.pad=2), on 1,800 training and 1,000 test images " \
        "after 1 epoch (" in sentence(small)
    assert lines[-1] == "#   cnnzoo train --config lenet5 --device cpu"
    assert all(len(line) <= 88 and line.startswith("#") for line in lines[:-1])
    once = script.measure.rewrite_measured(original, lines)
    twice = script.measure.rewrite_measured(
        once, script.measure.measured_lines({**RECORD, "epochs": 3}))
    for text, epochs in ((once, 10), (twice, 3)):
        assert text.count("# Measured here:") == 1
        assert f"after {epochs} epochs" in text
        kept = [line for line in text.splitlines()
                if not line.startswith(("# Measured here:", "#   "))]
        assert kept == [line for line in original.splitlines()
                        if not line.startswith(("# Measured here:", "#   "))]
        rewritten = cnnzoo.load_config(write(tmp_path / "lenet5.yaml", text))
        assert rewritten == cnnzoo.load_config(ROOT / "configs" / "lenet5.yaml")
    bare = "# yaml-language-server: $schema=x\n#\n# Origin.\nname: n\nmodel: {}\n"
    assert script.measure.rewrite_measured(bare, ["# Measured here: 1%"]) == (
        "# yaml-language-server: $schema=x\n#\n# Origin.\n# Measured here: 1%\nname: n\n"
        "model: {}\n")


def test_results_markdown(script):
    def record(params: int, macs: int, accuracy: float, **extra) -> dict:
        return {**RECORD, "params": params, "macs": macs, "test_accuracy": accuracy, **extra}

    records = {
        "lenet5": RECORD,
        "mlp": record(247_766, 247_272, 0.8850),
        "cnn-small": record(16_586, 988_672, 0.9050),
        "cnn-small-local": record(1_005_834, 988_672, 0.8900),
        "cs231n-simple": record(31_066, 362_496, 0.9120, adapted=[
            "data.dataset=fashion_mnist", "data.pad=2", "data.channels=3"]),
    }
    machine = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "torch": "2.14.1",
               "python": "3.11.9", "cnnzoo": "0.1.0"}
    text = script.report.render_markdown(records, ["cs231n-simple", "lenet5", "mlp"],
                                  {"vgg11-bn": "one epoch would take about 25m00s here"},
                                  machine, "10m00s per config", "python scripts/zoo_results.py",
                                  "accuracy-vs-params.png")
    assert ("| `lenet5` | 61,706 | 416,520 | 90.81% | 10 | 54,000 / 10,000 | 1m02s | 1m15s | "
            "2025-01-02 |") in text
    assert "| `cs231n-simple` (adapted) | 31,066 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows[:5]] == ["cs231n-simple", "lenet5", "mlp", "cnn-small",
                                                   "cnn-small-local"]
    assert "- `lenet5`: `cnnzoo train --config lenet5 --device cpu --out runs/zoo-1/lenet5`" in text
    ratio = 247_766 / 16_586
    assert f"`mlp` has {ratio:,.1f}x the parameters of `cnn-small`" in text
    assert "its test accuracy is 2.00 points lower" in text
    local = f"`cnn-small-local` has {1_005_834 / 16_586:,.1f}x the parameters"
    assert local in text and "1.00x its mult-adds; its test accuracy is 1.50 points lower" in text
    assert "| MLP 256-128-100 | 88.33% | @heitorrapela | `mlp` | 88.50% |" in text
    assert "| WRN-28-10 + random erasing | 96.30% |" in text
    assert "`cs231n-simple` (best here) | 91.20% |" in text
    assert "- `vgg11-bn`: one epoch would take about 25m00s here" in text
    assert "![test accuracy against parameters](accuracy-vs-params.png)" in text
    assert "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1, Python 3.11.9" in text
    best = "### `cs231n-simple`, the best here, per parameter"
    assert best in text
    # ResNet18 against cs231n-simple: 11,175,370 / 31,066 parameters, 94.90% vs 91.20%.
    ratio, points = 11_175_370 / 31_066, 94.90 - 91.20
    assert (f"| ResNet18, with flips, translation and rotation | 11,175,370 | torchvision's "
            f"ResNet18 with a 1-channel input and 10 outputs | {ratio:,.2f}x | 94.90% "
            f"(+{points:.2f}) | +{points / math.log10(ratio):.2f} |") in text
    empty = script.report.render_markdown({}, [], {}, machine, "none", "python x", None)
    assert "Nothing has been measured yet." in empty and "None of them" in empty


@pytest.mark.slow
def test_zoo_results_end_to_end_on_fake_files(script, tmp_path, monkeypatch):
    """One config through the whole script: a real `cnnzoo train` subprocess, then the
    report, results.json (as `cnnzoo zoo` reads it), the plot and the comment line."""
    write_mnist(tmp_path / "data", n_train=300, n_test=100)
    configs = tmp_path / "configs"
    header = "# yaml-language-server: $schema=cnnzoo.schema.json\n#\n# A test net.\n"
    write(configs / "small.yaml", header + "# Measured here: not yet measured\n" + SMALL)
    monkeypatch.setattr(script.measure, "measure_step_seconds", lambda *a, **k: 0.01)
    code = script.run.main(["--configs-dir", str(configs), "--results", str(tmp_path / "docs" /
                        "results.md"), "--runs", str(tmp_path / "runs"), "--data-root",
                        str(tmp_path / "data"), "--epochs", "1", "--budget-minutes", "5"])
    assert code == 0
    results = json.loads((tmp_path / "runs" / "small" / "results.json").read_text())
    assert results["epochs"] == 1
    accuracy = f"{results['test_accuracy']:.2%}"
    from cnnzoo.zoo.catalog import zoo_entries

    entry = next(e for e in zoo_entries(configs) if e.name == "small")
    assert entry.accuracy == results["test_accuracy"] and not entry.stale
    report = (tmp_path / "docs" / "results.md").read_text()
    assert (f"| `small` | {results['params']:,} | {results['macs']:,} | {accuracy} | 1 | "
            f"270 / 100 |") in report
    assert "--set train.epochs=1" in report
    assert_png(tmp_path / "docs" / "accuracy-vs-params.png")
    comment = (configs / "small.yaml").read_text()
    assert f"# Measured here: {accuracy} test accuracy on Fashion-MNIST, on 270 training" in comment
    assert "after 1 epoch (" in comment
    assert "not yet measured" not in comment


@pytest.mark.slow
def test_zoo_results_reuse_takes_a_finished_run_of_the_same_config_only(script, tmp_path,
                                                                         monkeypatch):
    """--reuse records a finished run of the same config without training again, and
    trains again when the config has changed since."""
    write_mnist(tmp_path / "data", n_train=300, n_test=100)
    configs = tmp_path / "configs"
    header = "# A test net.\n# Measured here: not yet measured\n"
    write(configs / "small.yaml", header + SMALL)
    monkeypatch.setattr(script.measure, "measure_step_seconds", lambda *a, **k: 0.01)
    argv = ["--configs-dir", str(configs), "--results", str(tmp_path / "results.md"),
            "--runs", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"),
            "--epochs", "1", "--budget-minutes", "5", "--reuse"]
    assert script.run.main(argv) == 0
    first = json.loads((tmp_path / "runs" / "small" / "results.json").read_text())

    calls = []
    monkeypatch.setattr(script.run.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    assert script.run.main(argv) == 0
    assert calls == []  # nothing trained: the finished run was taken
    record = json.loads((configs / "results.json").read_text())["configs"]["small"]
    assert record["test_accuracy"] == first["test_accuracy"]

    # Another learning rate: the old run no longer matches, so it is trained again
    # (here the stubbed training fails, which the script reports).
    argv += ["--set", "train.optimizer.lr=0.5"]
    assert script.run.main(argv) == 1
    assert len(calls) == 1
