"""Networks written by hand in plain PyTorch, the independent twins of bundled
configs: the tests compare outputs with them, scripts/bench.py compares speed.
They live in the package so that both import them the ordinary way."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU()]


class SpeedrunNet(nn.Module):
    """configs/fashion-speedrun.yaml: each block convolves, pools, then normalises."""

    def __init__(self) -> None:
        super().__init__()

        def conv_pool_bn(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
                    nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *conv_pool_bn(1, 18),  # the whitening layer: its weights are set, not learned
            *conv_pool_bn(18, 64), *_conv_bn(64, 64),
            *conv_pool_bn(64, 128), *_conv_bn(128, 128),
        )
        self.fc = nn.Linear(128, 10)
        self.features[0].weight.requires_grad_(False)  # frozen, as init: whitening leaves it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))
