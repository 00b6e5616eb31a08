"""The model language: shorthand forms, desugaring, padding, nested stacks, the
registry, the summary and the public API."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers.registry import get_layer_type, list_layer_types, register_layer
from tests.helpers.common import write

HEAD = "model:\n  layers:\n    - input: {width: 12, height: 10, depth: 3}\n"


def layers(*items: str) -> str:
    return HEAD + "".join(f"    - {item}\n" for item in items)


def plan_of(*items: str) -> cnnzoo.Plan:
    return cnnzoo.plan_experiment(cnnzoo.parse_config(layers(*items)))


def test_the_three_ways_to_write_a_layer_are_equal():
    long = cnnzoo.parse_config(layers("conv: {filters: 8}", "relu", "pool: {size: 2}",
                                     "dropout: {p: 0.5}", "fc: {units: 10}"))
    short = cnnzoo.parse_config(layers("conv: 8", "relu", "pool: 2", "dropout: 0.5", "fc: 10"))
    assert long.model == short.model


@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_keeps_size_or_divides_by_stride(kernel, stride):
    plan = plan_of(f"conv: {{filters: 2, kernel: {kernel}, stride: {stride}, padding: same}}")
    out = plan.layers[1].output
    assert (out.width, out.height) == (-(-12 // stride), -(-10 // stride))
    model = cnnzoo.build_model(plan)
    assert model.layers[1](torch.randn(1, 3, 10, 12)).shape[-2:] == (out.height, out.width)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_match_torch(mode):
    plan = plan_of(f"conv: {{filters: 2, kernel: 3, padding: 1, padding_mode: {mode}}}")
    conv = cnnzoo.build_model(plan).layers[1]
    reference = nn.Conv2d(3, 2, 3, padding=1, padding_mode=mode)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 10, 12)
    torch.testing.assert_close(conv(x), reference(x))


def test_even_kernel_same_padding_with_reflect_pads_after():
    plan = plan_of("conv: {filters: 1, kernel: 2, padding: same, padding_mode: reflect, "
                   "bias: false}")
    conv = cnnzoo.build_model(plan).layers[1]
    x = torch.randn(1, 3, 10, 12)
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 1, 0, 1), mode="reflect"), conv.weight
    )
    torch.testing.assert_close(conv(x), expected)


def test_pool_defaults_stride_to_size_and_global_pool_to_average():
    plan = plan_of("pool: {size: 3}", "global_pool")
    assert plan.layers[1].output.as_list() == [4, 3, 3]
    model = cnnzoo.build_model(plan)
    x = torch.randn(2, 3, 10, 12)
    expected = torch.nn.functional.max_pool2d(x, 3).mean(dim=(2, 3))
    torch.testing.assert_close(model(x), expected)


def test_batchnorm_is_2d_on_volumes_and_1d_on_vectors():
    model = cnnzoo.build_model(plan_of("conv: 4", "batchnorm", "fc: 6", "batchnorm"))
    assert isinstance(model.layers[2], nn.BatchNorm2d)
    assert isinstance(model.layers[4], nn.BatchNorm1d)


def test_fc_flattens_in_torch_order_and_flatten_layer_agrees():
    a = cnnzoo.build_model(plan_of("fc: 5")).eval()
    b = cnnzoo.build_model(plan_of("flatten", "fc: 5")).eval()
    b.layers[2].load_state_dict(a.layers[1].state_dict())
    x = torch.randn(2, 3, 10, 12)
    expected = x.reshape(2, -1) @ a.layers[1].weight.T + a.layers[1].bias
    torch.testing.assert_close(a(x), expected)
    torch.testing.assert_close(b(x), expected)


def test_residual_auto_shortcut_is_identity_or_strided_1x1_conv():
    plan = plan_of("residual: [{conv: {filters: 3, padding: same}}]",
                   "residual: [{conv: {filters: 6, stride: 2, padding: same}}]")
    same, down = plan.layers[1], plan.layers[2]
    assert same.label == "residual (identity)" and same.params == 3 * 27 + 3
    assert down.label == "residual (conv 1x1/2, 6)"
    assert down.params == (6 * 27 + 6) + (6 * 3 + 6)
    model = cnnzoo.build_model(plan).eval()
    block = model.layers[1]
    x = torch.randn(1, 3, 10, 12)
    torch.testing.assert_close(block(x), block.body(x) + x)


def test_name_defaults_to_file_stem(tmp_path):
    path = write(tmp_path / "my-net.yaml", layers("fc: 3"))
    assert cnnzoo.load_config(path).name == "my-net"


def test_overrides_are_validated_like_the_file():
    config = cnnzoo.parse_config(layers("conv: 8", "fc: 10"),
                                ["model.layers[1].conv.filters=16", "train.epochs=3",
                                 "train.optimizer=adam"])
    assert config.model.layers[1].filters == 16
    assert config.train.epochs == 3 and config.train.optimizer.name == "adam"
    with pytest.raises(cnnzoo.ConfigError, match=r"--set train.epochs=many.*epochs must be an"):
        cnnzoo.parse_config(layers("fc: 3"), ["train.epochs=many"])


def test_print_model_reads_like_the_yaml():
    text = repr(cnnzoo.build_model("cs231n-simple"))
    lines = text.splitlines()
    assert lines[0] == "Network 'cs231n-simple': 31,066 params"
    assert lines[2].strip().startswith("- conv: {filters: 12, padding: same}")
    assert "# (1) 32x32x12, 336 params" in lines[2]
    assert lines[4].strip().startswith("- pool")


def test_registry_rejects_duplicates_and_names_the_unknown():
    assert set(list_layer_types()) >= {
        "input", "conv", "relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid",
        "pool", "global_pool", "fc", "dropout", "batchnorm", "flatten", "residual", "repeat",
    }
    with pytest.raises(ValueError, match="already registered"):
        register_layer("conv")(type(get_layer_type("relu")()))
    with pytest.raises(KeyError, match="did you mean 'conv'"):
        get_layer_type("cnov")


def test_register_layer_adds_a_type_to_the_language():
    from dataclasses import dataclass

    from cnnzoo.layers.registry import _REGISTRY
    from cnnzoo.layers.spec import Inferred, LayerSpec
    from cnnzoo.utils.params import float_kind, param

    @register_layer("scale", primary="factor", doc="multiply by a constant")
    @dataclass(frozen=True, kw_only=True)
    class ScaleSpec(LayerSpec):
        factor: float = param(2.0, kind=float_kind(), doc="the constant")

        def infer(self, inp, where, context):
            return Inferred(output=inp, label=f"scale {self.factor:g}")

        def build(self, plan, build_child):
            factor = self.factor

            class Scale(nn.Module):
                def forward(self, x):
                    return x * factor

            return Scale()

    try:
        model = cnnzoo.build_model(plan_of("scale: 3", "fc: 2"))
        x = torch.randn(1, 3, 10, 12)
        torch.testing.assert_close(model.layers[1](x), 3 * x)
    finally:
        del _REGISTRY["scale"]


def test_summary_cli_prints_the_cs231n_volumes(cli):
    result = cli("summary", "--config", "configs/cs231n-simple.yaml")
    assert result.code == 0, result.err
    rows = [line.split() for line in result.out.splitlines() if line[:1].isdigit()]
    volumes = [next(c for c in row if c.count("x") == 2) for row in rows]
    assert volumes == ["32x32x3", "32x32x12", "32x32x12", "16x16x12", "1x1x10"]
    assert "336" in rows[1] and "30,730" in rows[4]
    assert "31,066" in result.out


def test_summary_json(cli):
    result = cli("summary", "--config", "cs231n-simple", "--json")
    data = json.loads(result.out)
    assert data["name"] == "cs231n-simple"
    assert data["total_params"] == 31066
    assert data["total_macs"] == 32 * 32 * 12 * 27 + 16 * 16 * 12 * 10
    assert [layer["output"] for layer in data["layers"]] == [
        [32, 32, 3], [32, 32, 12], [32, 32, 12], [16, 16, 12], [1, 1, 10]]
    assert data["layers"][1]["dense_params"] == 32 * 32 * 3 * 32 * 32 * 12 + 32 * 32 * 12
    assert data["activation_bytes"] == 4 * (3072 + 12288 * 2 + 3072 + 10)


def test_layers_cli_lists_every_registered_type(cli):
    result = cli("layers")
    assert result.code == 0
    for name in list_layer_types():
        assert f"\n{name}: " in "\n" + result.out
    data = json.loads(cli("layers", "--json").out)
    conv = next(e for e in data if e["type"] == "conv")
    assert {"name": "filters", "default": "required"}.items() <= conv["params"][0].items()


def test_schema_rejects_what_the_loader_rejects():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from cnnzoo.config.schema import experiment_schema

    validator = jsonschema.Draft7Validator(experiment_schema())
    good = yaml.safe_load(layers("conv: {filters: 8, padding: same}", "relu", "fc: 10"))
    assert not list(validator.iter_errors(good))
    for bad in ("conv: {filter: 8}", "cnov: 8", "conv: {filters: 8, padding: sme}", "conv"):
        assert list(validator.iter_errors(yaml.safe_load(layers(bad)))), bad
