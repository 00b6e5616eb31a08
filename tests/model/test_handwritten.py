"""Bundled configs against the same networks written by hand in PyTorch: same
parameter count, same output shape, and, with the weights copied over in order,
the same outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.measure.reference_nets import LeNet5, SpeedrunNet


class Cs231nSimple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.fc = nn.Linear(16 * 16 * 12, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 256), nn.Linear(256, 128)
        self.fc3, self.fc4 = nn.Linear(128, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = F.relu(self.fc3(x))
        return self.fc4(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 16, 1),
                                    BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        # 'same' padding with stride 2 on an even 28 pads (0, 1): TensorFlow's rule.
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


CASES = {
    "cs231n-simple": (Cs231nSimple, (3, 32, 32)),
    "mlp": (Mlp, (1, 28, 28)),
    "lenet5": (LeNet5, (1, 28, 28)),
    "resnet-small": (ResNetSmall, (1, 28, 28)),
    "fashion-speedrun": (SpeedrunNet, (1, 28, 28)),
}


@pytest.mark.parametrize("name", CASES)
def test_same_parameter_count_and_output_shape(name):
    reference_cls, shape = CASES[name]
    reference = reference_cls()
    model = cnnzoo.build_model(name)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    x = torch.randn(3, *shape)
    assert model(x).shape == reference(x).shape == (3, 10)


@pytest.mark.parametrize("name", ["cs231n-simple", "mlp", "lenet5", "fashion-speedrun"])
def test_same_outputs_with_copied_weights(name):
    reference_cls, shape = CASES[name]
    reference = reference_cls().eval()
    model = cnnzoo.build_model(name).eval()
    ours = list(model.parameters())
    theirs = list(reference.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            a.copy_(b)
        for a, b in zip(model.buffers(), reference.buffers(), strict=True):
            a.copy_(b)
    x = torch.randn(4, *shape)
    torch.testing.assert_close(model(x), reference(x))


def test_resnet_small_same_outputs_with_copied_weights():
    """The residual net differs from the hand-written one only in the 'same' padding
    of the stride-2 conv (TensorFlow's (0, 1) instead of PyTorch's (1, 1)); on an odd
    input both agree, so compare there."""
    reference = ResNetSmall().eval()
    model = cnnzoo.build_model(
        cnnzoo.config.experiment.with_overrides(
            cnnzoo.load_config("resnet-small"),
            ["model.layers.0.input.width=27", "model.layers.0.input.height=27",
             "data.resize=27"],
        )
    ).eval()
    with torch.no_grad():
        for a, b in zip(model.parameters(), reference.parameters(), strict=True):
            a.copy_(b)
        for a, b in zip(model.buffers(), reference.buffers(), strict=True):
            a.copy_(b)
    x = torch.randn(2, 1, 27, 27)
    torch.testing.assert_close(model(x), reference(x))
