"""Every bundled config: the summary agrees with a real forward pass, the parameter
count and torch's own FLOP counter; it validates against the published schema."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.model.inspect import layer_modules
from tests.helpers.common import CONFIGS, ROOT

IDS = [p.stem for p in CONFIGS]


def _direct(config: cnnzoo.ExperimentConfig) -> cnnzoo.ExperimentConfig:
    """The same network with every conv computed directly: FlopCounterMode counts the
    convolution, not an FFT, and the summary reports the convolution's mult-adds."""
    overrides = []
    for i, spec in enumerate(config.model.layers):
        if spec.type_name == "conv" and spec.impl != "direct":
            overrides.append(f"model.layers.{i}.{spec.type_name}.impl=direct")
    return cnnzoo.config.experiment.with_overrides(config, overrides) if overrides else config


def _collect_shapes(model: cnnzoo.Network, seen: dict[str, torch.Size]) -> list:
    """Hooks that record every layer's output shape, nested ones included, by plan index."""
    handles = []
    for plan, module in layer_modules(model):
        def hook(mod, inp, out, index=plan.index):
            seen[index] = out.shape

        handles.append(module.register_forward_hook(hook))
    return handles


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_summary_volumes_match_forward_pass(path):
    config = cnnzoo.load_config(path)
    plan = cnnzoo.plan_experiment(config)
    model = cnnzoo.build_model(plan).eval()
    seen: dict[str, torch.Size] = {}
    handles = _collect_shapes(model, seen)
    x = torch.randn(2, *plan.input.torch_shape())
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    for layer in plan.walk():
        assert tuple(seen[layer.index]) == (2, *layer.output.torch_shape()), layer.label
    assert logits.shape == (2, plan.output.depth)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_params_equal_numel(path):
    plan = cnnzoo.plan_experiment(cnnzoo.load_config(path))
    model = cnnzoo.build_model(plan)
    assert plan.total_params == sum(p.numel() for p in model.parameters())
    for i, layer in enumerate(plan.layers):
        assert layer.params == sum(p.numel() for p in model.layers[i].parameters()), layer.label


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_mult_adds_agree_with_flop_counter(path):
    config = _direct(cnnzoo.load_config(path))
    plan = cnnzoo.plan_experiment(config)
    model = cnnzoo.build_model(plan).eval()
    x = torch.randn(1, *plan.input.torch_shape())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert plan.total_macs == counter.get_total_flops() // 2
    assert plan.total_macs > 0


def _schema():
    return json.loads((ROOT / "configs" / "cnnzoo.schema.json").read_text())


def test_published_schema_is_current(cli):
    result = cli("schema")
    assert result.code == 0
    assert json.loads(result.out) == _schema(), "run: cnnzoo schema -o configs/cnnzoo.schema.json"


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_validates_against_schema_and_has_modeline(path):
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=cnnzoo.schema.json")
    jsonschema.Draft7Validator(_schema()).validate(yaml.safe_load(text))


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_says_where_it_comes_from(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert len(header) >= 4, "each bundled config starts with a comment on its origin"


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_resolved_config_round_trips(path):
    config = cnnzoo.load_config(path)
    again = cnnzoo.parse_config(config.to_yaml())
    assert again == config
