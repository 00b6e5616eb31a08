"""Properties over random layer stacks and random text.

A stack is either refused with a `ConfigError` or builds into a network whose real
forward pass gives, layer by layer, exactly the volumes the plan promised, with
exactly the plan's parameter count. Text of any shape is either an experiment or
a `ConfigError`: nothing a user writes may surface as any other exception.
"""

from __future__ import annotations

from typing import Any

import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import cnnzoo

MAX_SIDE = 16  # images stay small so that 80 forward passes take seconds

# Ranges reach past what is valid on purpose (0, -1, a string, kernels wider than the
# image): those stacks must be refused with a ConfigError, never reach torch.
invalid = st.sampled_from([0, -1, "3", 2.5, [3, 3, 3], True])


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` nine times in ten, else a value of the wrong type or range."""
    return st.integers(0, 9).flatmap(lambda roll: invalid if roll == 0 else valid)


sizes = mostly(st.one_of(st.integers(1, 9), st.lists(st.integers(1, 5), min_size=2, max_size=2)))
small_sizes = mostly(st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=2,
                                                             max_size=2)))
paddings = mostly(st.one_of(
    st.sampled_from(["same", "valid", "sme"]),
    st.integers(0, 4),
    st.lists(st.integers(0, 3), min_size=2, max_size=2),
))


@st.composite
def conv_layer(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return {"conv": draw(st.integers(1, 8))}  # the shorthand: filters only
    params: dict[str, Any] = {"filters": draw(mostly(st.integers(1, 8)))}
    optional = {
        "kernel": sizes,
        "stride": small_sizes,
        "padding": paddings,
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular", "mirror"]),
        "dilation": small_sizes,
        "groups": st.integers(1, 4),
        "bias": st.booleans(),
        "activation": st.sampled_from(["relu", "tanh", "leaky_relu"]),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            params[key] = draw(strategy)
    return {"conv": params}


@st.composite
def pool_layer(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return {"pool": draw(st.integers(1, 4))}
    params: dict[str, Any] = {"kind": draw(st.sampled_from(["max", "avg"]))}
    if draw(st.booleans()):
        params["size"] = draw(sizes)
    if draw(st.booleans()):
        params["stride"] = draw(small_sizes)
    if draw(st.booleans()):
        params["padding"] = draw(st.integers(0, 2))
    return {"pool": params}


fc_layer = st.one_of(
    mostly(st.integers(1, 12)).map(lambda units: {"fc": units}),
    st.builds(
        lambda units, bias: {"fc": {"units": units, "bias": bias}},
        st.integers(1, 12),
        st.booleans(),
    ),
)
simple_layer = st.one_of(
    st.sampled_from(["relu", "batchnorm", "flatten", "global_pool", "dropout", "tanh"]),
    st.floats(0.0, 0.9).map(lambda p: {"dropout": round(p, 2)}),
    st.sampled_from(["avg", "max"]).map(lambda kind: {"global_pool": kind}),
)
flat_layer = st.one_of(conv_layer(), pool_layer(), fc_layer, simple_layer)


@st.composite
def residual_layer(draw: st.DrawFn) -> Any:
    body = draw(st.lists(st.one_of(conv_layer(), pool_layer(), simple_layer), min_size=1,
                         max_size=3))
    if draw(st.booleans()):
        return {"residual": body}
    return {
        "residual": {
            "layers": body,
            "shortcut": draw(st.sampled_from(["auto", "identity", "conv"])),
            "shortcut_batchnorm": draw(st.booleans()),
        }
    }


@st.composite
def repeat_layer(draw: st.DrawFn) -> Any:
    body = draw(st.lists(st.one_of(conv_layer(), pool_layer(), simple_layer), min_size=1,
                         max_size=2))
    return {"repeat": {"times": draw(st.integers(1, 2)), "layers": body}}


any_layer = st.one_of(flat_layer, flat_layer, flat_layer, residual_layer(), repeat_layer())


@st.composite
def experiment_text(draw: st.DrawFn) -> str:
    volume = {
        "width": draw(st.integers(1, MAX_SIDE)),
        "height": draw(st.integers(1, MAX_SIDE)),
        "depth": draw(st.integers(1, 4)),
    }
    layers: list[Any] = [{"input": volume}]
    layers += draw(st.lists(any_layer, min_size=1, max_size=6))
    return yaml.safe_dump({"model": {"layers": layers}}, default_flow_style=None, sort_keys=False)


def _expected_shape(volume: Any) -> tuple[int, ...]:
    """(batch, ...) of a layer's output as the plan describes it, in torch's NCHW order."""
    if volume.flat:
        return (2, volume.depth)
    return (2, volume.depth, volume.height, volume.width)


def _check_against_forward_pass(plan: cnnzoo.Plan, text: str) -> None:
    """Every top-level layer's real output has the plan's volume; the parameters add up."""
    model = cnnzoo.build_model(plan).eval()
    assert len(model.layers) == len(plan.layers)
    seen: dict[int, tuple[int, ...]] = {}
    for i, layer in enumerate(model.layers):
        layer.register_forward_hook(
            lambda module, args, output, i=i: seen.__setitem__(i, tuple(output.shape))
        )
    volume = plan.layers[0].output
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, volume.depth, volume.height, volume.width, generator=generator)
    with torch.no_grad():
        model(images)
    for i, layer_plan in enumerate(plan.layers):
        assert seen[i] == _expected_shape(layer_plan.output), (i, layer_plan.label, text)
    assert sum(p.numel() for p in model.parameters()) == plan.total_params, text


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(experiment_text())
def test_random_stack_is_refused_or_matches_its_plan(text: str) -> None:
    try:
        plan = cnnzoo.plan_experiment(cnnzoo.parse_config(text))
    except cnnzoo.ConfigError:
        event("refused with a ConfigError")
        return
    event("built and run")
    _check_against_forward_pass(plan, text)


KNOWN_STACK = """\
model:
  layers:
    - input: {width: 15, height: 13, depth: 4}
    - conv: {filters: 8, kernel: 4, stride: 2, padding: same, padding_mode: reflect}
    - conv: {filters: 8, kernel: 3, dilation: 2, groups: 4, padding: 1}
    - residual: [{conv: {filters: 16, kernel: 3, stride: 2, padding: same}}, relu]
    - pool: {size: 2, stride: 1, padding: 1}
    - flatten
    - fc: 10
"""


def test_known_stack_matches_hand_computed_volumes() -> None:
    """The property's comparison on one stack worked out by hand (W x H x D, flat)."""
    plan = cnnzoo.plan_experiment(cnnzoo.parse_config(KNOWN_STACK))
    outputs = [(v.width, v.height, v.depth, v.flat) for v in (p.output for p in plan.layers)]
    assert outputs == [
        (15, 13, 4, False),
        (8, 7, 8, False),  # 'same', stride 2: ceil(15 / 2) x ceil(13 / 2)
        (6, 5, 8, False),  # dilated 3x3 spans 5: (8 - 5 + 2) + 1 x (7 - 5 + 2) + 1
        (3, 3, 16, False),  # 'same', stride 2; the 1x1 shortcut has stride 2 too
        (4, 4, 16, False),  # (3 + 2 - 2) / 1 + 1
        (1, 1, 256, True),
        (1, 1, 10, True),
    ]
    # conv 8*4*4*4+8, grouped conv 8*2*3*3+8, residual 16*8*9+16 + shortcut 16*8+16, fc
    assert plan.total_params == 520 + 152 + (1168 + 144) + (256 * 10 + 10)
    _check_against_forward_pass(plan, KNOWN_STACK)


yamlish = st.lists(
    st.sampled_from(
        [":", ": ", "-", "- ", "{", "}", "[", "]", ",", "&a ", "*a", "!!", "!!python/name:x ",
         "<<: ", "\t", "\n", "  ", "model", "layers", "conv", "filters", "relu", "3", "'",
         '"', "#", "?", "|", ">", "%YAML 1.1\n", "---\n", "...\n", "~", "\x07"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), yamlish))
@example("a" * 300)  # a plain scalar, not a mapping
@example("model:\n  layers: [relu]\n")
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        config = cnnzoo.parse_config(text)
    except cnnzoo.ConfigError:
        return
    assert isinstance(config, cnnzoo.ExperimentConfig)
