"""`squeeze_excite`, `groupnorm` and `layernorm` against the same computation written
by hand in torch (weights copied: outputs and gradients), and their bad values, each
one message with its line and exit code 2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.common import assert_summary_refuses
from tests.layers.test_branches import assert_same_function, network


class SqueezeExcite(nn.Module):
    """Hu et al.'s SE block, as torchvision writes it (1x1 convs for the two fcs)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class ConvThen(nn.Module):
    """A 3x3 conv (so the gradient reaches weights before the layer), then `after`."""

    def __init__(self, after: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 8, 3, padding=1)
        self.after = after

    def forward(self, x):
        return self.after(self.conv(x))


def test_squeeze_excite_matches_torch():
    model = network("- conv: {filters: 8, kernel: 3, padding: same}\n- squeeze_excite: 4")
    plan = model.plan.layers[2]
    assert plan.params == 8 * 2 + 2 + 2 * 8 + 8
    reference = ConvThen(SqueezeExcite(8, 2))
    # The fcs as 1x1 convs hold the same numbers as Linear weights, shaped (out, in, 1, 1).
    ours = list(model.parameters())
    with torch.no_grad():
        for p, q in zip(ours, reference.parameters(), strict=True):
            q.copy_(p.view_as(q))
    x = torch.randn(3, 6, 8, 8, requires_grad=True)
    torch.testing.assert_close(model(x), reference(x))
    model(x).square().sum().backward()
    mine = [p.grad.clone() for p in ours]
    for p in (*ours, *reference.parameters()):
        p.grad = None
    reference(x).square().sum().backward()
    for p, q in zip(mine, reference.parameters(), strict=True):
        torch.testing.assert_close(p, q.grad.view_as(p))


def test_squeeze_excite_takes_other_activations_and_gates():
    model = network("- squeeze_excite: {ratio: 3, activation: silu, gate: tanh}")
    module = model.layers[1]
    x = torch.randn(2, 6, 8, 8)
    hidden = F.silu(F.linear(x.mean((2, 3)), module.reduce.weight, module.reduce.bias))
    scale = torch.tanh(F.linear(hidden, module.expand.weight, module.expand.bias))
    torch.testing.assert_close(model(x), x * scale[:, :, None, None])


@pytest.mark.parametrize(("depth", "hidden"), [(16, 8), (96, 24), (240, 64), (120, 32),
                                              (144, 40), (288, 72), (576, 144)])
def test_divisor_rounds_the_hidden_units_as_mobilenet_v3(depth, hidden):
    """torchvision's MobileNetV3-Small SE blocks: hidden = _make_divisible(depth // 4, 8)."""
    from torchvision.ops.misc import SqueezeExcitation

    model = network("- squeeze_excite: {ratio: 4, divisor: 8, gate: hardsigmoid}",
                    (4, 4, depth))
    assert model.plan.layers[1].detail["hidden"] == hidden
    reference = SqueezeExcitation(depth, hidden, scale_activation=nn.Hardsigmoid)
    assert model.plan.layers[1].params == sum(p.numel() for p in reference.parameters())


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
    """Wu and He's group norm written out: statistics per image and group of channels."""
    b, c, h, w = x.shape
    g = x.view(b, groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = g.var(-1, unbiased=False, keepdim=True)
    normed = ((g - mean) / torch.sqrt(var + 1e-5)).view(b, c, h, w)
    return normed * weight[None, :, None, None] + bias[None, :, None, None]


class HandNorm(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.weight, self.bias = nn.Parameter(torch.ones(8)), nn.Parameter(torch.zeros(8))

    def forward(self, x):
        return group_norm(x, self.groups, self.weight, self.bias)


@pytest.mark.parametrize(("layer", "groups"), [("groupnorm: 4", 4), ("groupnorm: 8", 8),
                                               ("layernorm", 1)])
def test_group_and_layer_norm_match_torch(layer, groups):
    model = network(f"- conv: {{filters: 8, kernel: 3, padding: same}}\n- {layer}")
    with torch.no_grad():  # a scale and shift other than 1 and 0
        model.layers[2].weight.uniform_(0.5, 2)
        model.layers[2].bias.uniform_(-1, 1)
    assert model.plan.layers[2].params == 16
    assert_same_function(model, ConvThen(HandNorm(groups)), (3, 6, 8, 8))


def test_layernorm_normalises_each_image_over_its_whole_volume():
    model = network("- layernorm").eval()
    x = torch.randn(2, 6, 8, 8) * 3 + 1
    y = model(x)
    torch.testing.assert_close(y, F.layer_norm(x, x.shape[1:]))
    torch.testing.assert_close(model(x[:1]), y[:1])  # no statistics across the batch


BAD = {
    "ratio larger than the depth": (
        "- squeeze_excite: 8",
        "model.layers[1] (squeeze_excite) at line 4: ratio 8 is larger than the depth 6 of "
        "its input 8x8x6", "use a ratio of at most 6"),
    "groups that do not divide the depth": (
        "- groupnorm: {groups: 4}",
        "model.layers[1] (groupnorm) at line 4: groups 4 does not divide the depth 6",
        "e.g. groups: 3"),
    "squeeze_excite on a vector": (
        "- fc: 12\n- squeeze_excite: 4",
        "model.layers[2] (squeeze_excite) at line 5: squeeze_excite rescales the channels of "
        "a volume, but its input is the vector", None),
    "a gate that is no activation": (
        "- squeeze_excite: {gate: hard}",
        "model.layers[1] (squeeze_excite) at line 4: gate must be one of", None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_are_one_message_with_the_line(tmp_path, cli, case):
    assert_summary_refuses(cli, tmp_path, 6, *BAD[case])
