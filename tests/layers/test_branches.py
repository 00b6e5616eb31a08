"""`branches`: an Inception block, a DenseNet block and a SqueezeNet fire module, each
against the same block written by hand in torch with the weights copied over (outputs
and gradients); shapes, summary rows and receptive fields through paths; the bad files,
each one message with its line and exit code 2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.config.experiment import with_overrides
from cnnzoo.layers.shapes import Volume
from cnnzoo.model.inspect import layer_modules
from cnnzoo.model.summary import format_summary
from cnnzoo.runs.initfrom import match_tensors
from tests.helpers.common import assert_summary_refuses


def network(layers: str, volume: tuple[int, int, int] = (8, 8, 6)) -> cnnzoo.Network:
    w, h, d = volume
    body = "\n".join("    " + line for line in layers.strip("\n").splitlines())
    text = f"model:\n  layers:\n    - input: {{width: {w}, height: {h}, depth: {d}}}\n{body}\n"
    torch.manual_seed(0)
    return cnnzoo.build_model(cnnzoo.parse_config(text))


def assert_same_function(model: nn.Module, reference: nn.Module, shape: tuple[int, ...]) -> None:
    """Copy `model`'s parameters into `reference` in order, then compare outputs and the
    gradients of the input and of every parameter."""
    ours, theirs = list(model.parameters()), list(reference.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for p, q in zip(ours, theirs, strict=True):
            q.copy_(p)
    torch.manual_seed(1)
    x = torch.randn(*shape)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = model(x1), reference(x2)
    torch.testing.assert_close(y1, y2)
    weights = torch.randn_like(y1)
    (y1 * weights).sum().backward()
    (y2 * weights).sum().backward()
    # Sums in another order: float rounding, a few ulps of the largest gradients.
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)


INCEPTION = """
- branches:
    merge: concat
    paths:
      - [conv: {filters: 4, kernel: 1, activation: relu}]
      - - conv: {filters: 3, kernel: 1, activation: relu}
        - conv: {filters: 5, kernel: 3, padding: same, activation: relu}
      - [{pool: {size: 3, stride: 1, padding: 1}}, {conv: {filters: 2, kernel: 1}}]
      - []
"""


class Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(6, 4, 1)
        self.b2a, self.b2b = nn.Conv2d(6, 3, 1), nn.Conv2d(3, 5, 3, padding=1)
        self.b3 = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return torch.cat([F.relu(self.b1(x)), F.relu(self.b2b(F.relu(self.b2a(x)))),
                          self.b3(F.max_pool2d(x, 3, 1, 1)), x], dim=1)


def test_inception_block_matches_torch():
    model = network(INCEPTION)
    assert model.plan.output == Volume(8, 8, 4 + 5 + 2 + 6)
    assert_same_function(model, Inception(), (2, 6, 8, 8))


DENSE = """
- repeat:
    times: 2
    layers:
      - branches:
          paths:
            - []
            - [batchnorm, relu, {conv: {filters: 8, kernel: 1, bias: false}},
               batchnorm, relu, {conv: {filters: 2, kernel: 3, padding: same, bias: false}}]
"""


class DenseLayer(nn.Module):
    """torchvision's DenseNet-BC layer: BN-ReLU-1x1 conv, BN-ReLU-3x3 conv, concatenated."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, new], dim=1)


def test_dense_block_matches_torch():
    model = network(DENSE)
    assert model.plan.output.depth == 6 + 2 * 2
    reference = nn.Sequential(DenseLayer(6, 2), DenseLayer(8, 2))
    assert_same_function(model.train(), reference.train(), (3, 6, 8, 8))
    assert_same_function(model.eval(), reference.eval(), (3, 6, 8, 8))


FIRE = """
- conv: {filters: 3, kernel: 1, activation: relu}
- branches:
  - [conv: {filters: 4, kernel: 1, activation: relu}]
  - [conv: {filters: 4, kernel: 3, padding: 1, activation: relu}]
"""


class Fire(nn.Module):
    """torchvision's SqueezeNet fire module."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(6, 3, 1)
        self.expand1x1, self.expand3x3 = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], dim=1)


def test_fire_module_matches_torch():
    model = network(FIRE)
    assert_same_function(model, Fire(), (2, 6, 8, 8))


def test_add_merge_sums_the_paths():
    model = network("- branches: {merge: add, paths: [[conv: {filters: 6, kernel: 3, "
                    "padding: same}], [], [pool: {kind: avg, size: 3, stride: 1, padding: 1}]]}")
    conv = model.layers[1].paths[0][0]
    x = torch.randn(2, 6, 8, 8)
    expected = conv(x) + x + F.avg_pool2d(x, 3, 1, 1)
    torch.testing.assert_close(model(x), expected)


def test_summary_indents_each_path_and_takes_the_widest_receptive_field():
    model = network(INCEPTION + "- branches: [[pool: {size: 5, stride: 1, padding: 2}], []]")
    plan = model.plan
    first, second = plan.layers[1], plan.layers[2]
    assert [p.label for p in first.children] == ["path 0", "path 1", "path 2",
                                                  "path 3 (identity)"]
    assert first.receptive_field == (3, 3)  # path 1's 3x3 conv; path 0 sees 1x1
    assert second.receptive_field == (7, 7)  # a 5x5 window after a 3x3 one
    assert first.dense_params == (8 * 8 * 6) * (8 * 8 * 17) + 8 * 8 * 17
    assert first.params == sum(p.numel() for p in model.layers[1].parameters())
    lines = format_summary(plan).splitlines()
    row = next(line for line in lines if line.startswith("1.1.2"))
    assert "      conv 3x3/1 same, 5" in row and "8x8x5" in row
    assert any(line.startswith("1.3 ") and "  path 3 (identity)" in line for line in lines)


def test_layer_modules_pair_every_nested_layer_with_its_module():
    model = network("- branches: [[conv: {filters: 2, kernel: 1}, "
                    "branches: [[conv: {filters: 3, kernel: 1}], []]], []]")
    pairs = {plan.index: module for plan, module in layer_modules(model)}
    assert pairs["1.0.1.0.0"] is model.layers[1].paths[0][1].paths[0][0]
    assert model.plan.output.depth == (3 + 2) + 6  # path 0 ends in the inner join


def test_branches_inside_repeat_and_residual_plan_and_run():
    model = network("- residual: [branches: {merge: add, paths: [[conv: {filters: 6, kernel: "
                    "3, padding: same}], []]}]\n- repeat: {times: 2, layers: [branches: [[], []]]}")
    assert model.plan.output == Volume(8, 8, 24)
    assert model(torch.randn(1, 6, 8, 8)).shape == (1, 24, 8, 8)


def test_a_path_layer_can_be_overridden_by_its_key_path():
    config = cnnzoo.parse_config("model:\n  layers:\n    - input: {width: 8, height: 8, depth: 6}\n"
                                 + "\n".join("    " + x for x in INCEPTION.strip().splitlines()))
    key = "model.layers[1].branches.paths[1][1].conv.filters"
    changed = with_overrides(config, [f"{key}=7"])
    assert cnnzoo.plan_experiment(changed).output.depth == 4 + 7 + 2 + 6


def test_init_from_loads_the_paths_that_fit(tmp_path):
    trained = network(INCEPTION)
    wider = network(INCEPTION.replace("filters: 5", "filters: 9"))
    report = match_tensors(wider, trained.state_dict(), "trained")
    assert "layers.1.paths.1.2.weight" not in report.loaded
    assert "layers.1.paths.0.0.weight" in report.loaded
    torch.testing.assert_close(wider.layers[1].paths[2][1].weight,
                               trained.layers[1].paths[2][1].weight)


BAD = {
    "concat of different W x H": (
        "- branches:\n    paths:\n      - [conv: {filters: 4, kernel: 3}]\n"
        "      - [conv: {filters: 4, kernel: 1}]",
        "model.layers[1] (branches).paths[1] at line 7: merge: concat needs every path to "
        "keep the same W x H, but path 0 gives 6x6x4 and path 1 gives 8x8x4", "padding: same"),
    "add of different depths": (
        "- branches:\n    merge: add\n    paths:\n      - [conv: {filters: 4, kernel: 1}]\n"
        "      - [conv: {filters: 6, kernel: 1}]",
        "model.layers[1] (branches).paths[1] at line 8: merge: add needs every path to give "
        "the same volume, but path 0 gives 8x8x4 and path 1 gives 8x8x6", "a 1x1 conv to 4"),
    "empty paths": (
        "- branches:\n    paths: []",
        "model.layers[1] (branches) at line 5: paths must be a non-empty list", "[] is the"),
    "merge bogus": (
        "- branches:\n    merge: bogus\n    paths: [[], []]",
        "model.layers[1] (branches) at line 5: merge must be one of concat, add. "
        "Received: merge='bogus'", None),
    "a path that is no list": (
        "- branches:\n    paths:\n      - conv: 4",
        "model.layers[1] (branches).paths[0] at line 6: a path is a list of layers", "brackets"),
    "an input layer inside a path": (
        "- branches:\n    paths:\n      - []\n      - [input: {width: 8, height: 8, depth: 3}]",
        "model.layers[1] (branches).paths[1][0] (input) at line 7: input must be the first "
        "layer of the model", "every path starts from the branch's input"),
    "a layer inside a path": (
        "- branches:\n    paths:\n      - []\n      - [relu, {conv: {filters: 2, kernel: 9}}]",
        "model.layers[1] (branches).paths[1][1] (conv) at line 7: kernel 9x9 is larger than "
        "its input", None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_branches_are_one_message_with_the_line(tmp_path, cli, case):
    assert_summary_refuses(cli, tmp_path, 3, *BAD[case])


def test_viz_draws_the_activations_of_every_path():
    from cnnzoo.tools.viz import activation_volumes

    model = network(INCEPTION).eval()
    drawn = [plan.index for plan, _ in activation_volumes(model, torch.randn(1, 6, 8, 8))]
    assert drawn == ["1.0.0", "1.1.0", "1.1.2", "1.2.0", "1.2.1"]


def test_freq_filter_and_capsules_follow_a_branch():
    model = network("- branches: [[conv: {filters: 4, kernel: 3, padding: same}], []]\n"
                    "- freq_filter: {kind: lowpass, cutoff: 0.3}\n"
                    "- primary_capsules: {capsules: 2, dim: 4, kernel: 3, stride: 2}\n"
                    "- capsules: {units: 3, dim: 4}\n- length")
    assert model(torch.randn(2, 6, 8, 8)).shape == (2, 3)


def test_a_tune_space_reaches_into_a_path():
    from cnnzoo.tune.space import parse_space, validate_space

    key = "model.layers[5].branches.paths[1][3].conv.filters"  # inception-mini's 3x3 conv
    space = parse_space(f"space:\n  {key}: [16, 32]\n", "space.yaml")
    validate_space(space, "inception-mini", [])
    bad = parse_space(f"space:\n  {key.replace('[3]', '[9]')}: [16]\n", "space.yaml")
    with pytest.raises(cnnzoo.ConfigError, match=r"paths\.1\.9 does not exist|does not exist"):
        validate_space(bad, "inception-mini", [])


def test_the_printed_network_and_the_json_summary_name_each_path():
    from cnnzoo.model.summary import summary_dict

    model = network(INCEPTION)
    text = repr(model)
    assert "  - branches:" in text and "      - path 3 (identity):" in text
    assert "          - conv: {filters: 5, padding: same}" in text
    branch = summary_dict(model.plan)["layers"][1]
    assert [c["type"] for c in branch["children"]] == ["path"] * 4
    assert branch["children"][1]["children"][2]["where"] == (
        "model.layers[1] (branches).paths[1][1] (conv)")
