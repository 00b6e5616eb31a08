"""The classic configs against hand-written twins in torch, their published parameter
counts, and the published rows' counts from the named architectures."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnzoo
from tests.helpers.common import slow_cases
from tests.model.test_handwritten import BasicBlock


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
