"""Every registered layer type, one by one: parsed from YAML, planned, built and run,
with the plan's output volume and parameter count checked against the real module."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.layers.registry import list_layer_types, parse_layer
from cnnzoo.layers.shapes import Volume
from cnnzoo.utils.params import Where

INPUT = Volume(8, 8, 3)

# One YAML item per layer type with its required parameters (or a list: the layers its
# input needs, then it); a new type must add its row here
# (test_every_type_has_an_example), so that it is built and run at least once.
PRIMARY = {"primary_capsules": {"capsules": 2, "dim": 4, "kernel": 3, "stride": 2}}
EXAMPLES = {
    "input": {"input": {"width": 8, "height": 8, "depth": 3}},
    "relu": "relu",
    "gelu": "gelu",
    "silu": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "relu6": "relu6",
    "hardswish": "hardswish",
    "hardsigmoid": "hardsigmoid",
    "leaky_relu": {"leaky_relu": 0.2},
    "elu": {"elu": 0.5},
    "dropout": {"dropout": 0.25},
    "batchnorm": "batchnorm",
    "flatten": "flatten",
    "conv": {"conv": {"filters": 4, "kernel": 3, "stride": 2, "padding": "same"}},
    "residual": {"residual": {"layers": [{"conv": {"filters": 5, "kernel": 3,
                                                   "padding": "same"}}, "relu"]}},
    "repeat": {"repeat": {"times": 2, "layers": [{"conv": {"filters": 3, "kernel": 3,
                                                          "padding": "same"}}]}},
    "branches": {"branches": {"paths": [[{"conv": {"filters": 2, "kernel": 1}}], [],
                                        [{"pool": {"size": 3, "stride": 1, "padding": 1}}]]}},
    "squeeze_excite": {"squeeze_excite": 2},
    "groupnorm": {"groupnorm": 3},
    "layernorm": "layernorm",
    "fc": {"fc": 7},
    "local": {"local": {"filters": 2, "kernel": 3}},
    "pool": {"pool": 2},
    "global_pool": "global_pool",
    "freq_filter": {"freq_filter": {"kind": "bandpass", "low": 0.1, "high": 0.3}},
    "primary_capsules": {"primary_capsules": {"capsules": 2, "dim": 4, "kernel": 3}},
    # Layers that need capsules as input: the layers before them, then the layer itself.
    "capsules": [PRIMARY, {"capsules": {"units": 3, "dim": 4, "routing": 2}}],
    "length": [PRIMARY, {"capsules": {"units": 3, "dim": 4}}, "length"],
    "decoder": [PRIMARY, {"capsules": {"units": 3, "dim": 4}}, {"decoder": {"units": [16]}}],
}


def test_every_type_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(list_layer_types())


@pytest.mark.parametrize("name", list_layer_types())
def test_layer_type_is_planned_built_and_run(name: str) -> None:
    example = EXAMPLES[name]
    where = Where("model.layers", ("model", "layers"))
    specs = [parse_layer(item, i, where)
             for i, item in enumerate(example if isinstance(example, list) else [example])]
    assert specs[-1].type_name == name
    plan = cnnzoo.plan_layers(specs, INPUT)
    torch.manual_seed(0)
    model = cnnzoo.build_model(plan).eval()
    x = torch.randn(2, *INPUT.torch_shape())
    with torch.no_grad():
        y = model(x)
    # The plan's arithmetic against the module torch built (a network ending in a 1x1
    # volume gives one vector per image, as a classifier's logits).
    out = plan.output
    expected = (2, out.depth) if (out.width, out.height) == (1, 1) else (2, *out.torch_shape())
    assert tuple(y.shape) == expected
    assert sum(p.numel() for p in model.parameters()) == plan.total_params
    assert torch.isfinite(y).all()
    if name in ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu", "relu6",
                "hardswish", "hardsigmoid"):
        # The MobileNet activations written out: relu6(x) = min(max(x, 0), 6).
        relu6 = lambda t: t.clamp(0, 6)  # noqa: E731
        reference = {"relu": torch.relu, "gelu": torch.nn.functional.gelu,
                     "silu": torch.nn.functional.silu, "tanh": torch.tanh,
                     "sigmoid": torch.sigmoid, "relu6": relu6,
                     "hardswish": lambda t: t * relu6(t + 3) / 6,
                     "hardsigmoid": lambda t: relu6(t + 3) / 6,
                     "elu": lambda t: torch.nn.functional.elu(t, 0.5),
                     "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.2)}[name]
        torch.testing.assert_close(y, reference(x))
