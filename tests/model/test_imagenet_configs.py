"""configs/imagenet/: torchvision's classic architectures written in the model language.
Each against the torchvision builder itself: the same parameter count, and with
torchvision's weights copied over in order, the same outputs on a 224x224 image; the
summary's mult-adds against torch's FLOP counter and ResNet-18's published 1.82 G;
ONNX export; the configs resolve by name, validate against the schema and round-trip."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.config.experiment import resolve_config_path
from tests.helpers.common import ROOT

IMAGENET = sorted((ROOT / "configs" / "imagenet").glob("*.yaml"))
IDS = [p.stem for p in IMAGENET]


def torchvision_model(name: str) -> torch.nn.Module:
    extra = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(weights=None, **extra).eval()


def test_the_architectures_are_there():
    assert IDS == ["densenet121", "googlenet", "mobilenet_v2", "mobilenet_v3_small",
                   "resnet18", "squeezenet1_1"]


@pytest.mark.parametrize("path", IMAGENET, ids=IDS)
def test_parameter_count_is_torchvisions(path):
    plan = cnnzoo.plan_experiment(cnnzoo.load_config(path))
    reference = torchvision_model(path.stem)
    assert plan.total_params == sum(p.numel() for p in reference.parameters())
    assert plan.input == cnnzoo.layers.shapes.Volume(224, 224, 3)
    assert plan.output.depth == 1000


def test_resnet18_mult_adds_are_the_published_ones():
    plan = cnnzoo.plan_experiment(cnnzoo.load_config("imagenet/resnet18"))
    # 1.82 G multiply-adds at 224x224 (the paper's "1.8 x 10^9 FLOPs"; torchvision's
    # model card: 1.81 GFLOPS, which counts multiply-adds).
    assert plan.total_macs == pytest.approx(1.82e9, rel=0.005)


@pytest.mark.slow
@pytest.mark.parametrize("path", IMAGENET, ids=IDS)
def test_same_outputs_as_torchvision_with_its_weights_and_flop_count(path):
    model = cnnzoo.build_model(path).eval()
    reference = torchvision_model(path.stem)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert len(ours) == len(theirs)
    with torch.no_grad():
        # The same tensors in the same order (an SE fc is torchvision's 1x1 conv).
        for (name, mine), other in zip(ours.items(), theirs.values(), strict=True):
            assert mine.numel() == other.numel(), name
            mine.copy_(other.view_as(mine))
        # Running statistics other than 0 and 1, so that every batchnorm is exercised.
        torch.manual_seed(0)
        for (name, mine), other in zip(ours.items(), theirs.values(), strict=True):
            if name.endswith("running_var"):
                mine.uniform_(0.5, 2)
                other.copy_(mine.view_as(other))
        x = torch.randn(2, 3, 224, 224)
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
        with FlopCounterMode(display=False) as counter:
            reference(x[:1])
    assert model.plan.total_macs == counter.get_total_flops() // 2


@pytest.mark.slow
@pytest.mark.parametrize("path", IMAGENET, ids=IDS)
def test_exports_to_onnx_and_runs_a_224_image(tmp_path, path):
    pytest.importorskip("onnxruntime")
    from cnnzoo.tools.export import write_checked

    model = cnnzoo.build_model(path).eval()
    out = tmp_path / f"{path.stem}.onnx"
    difference = write_checked(model, model, torch.randn(2, 3, 224, 224), "onnx", out, {})
    assert out.exists() and difference < 1e-3


@pytest.mark.parametrize("path", IMAGENET, ids=IDS)
def test_resolves_by_folder_and_name(path):
    assert resolve_config_path(f"imagenet/{path.stem}") == path


@pytest.mark.parametrize("path", IMAGENET, ids=IDS)
def test_validates_round_trips_and_says_where_it_comes_from(path):
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../cnnzoo.schema.json")
    schema = json.loads((ROOT / "configs" / "cnnzoo.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(text))
    assert len([line for line in text.splitlines() if line.startswith("#")]) >= 4
    config = cnnzoo.load_config(path)
    assert cnnzoo.parse_config(config.to_yaml()) == config


def test_the_zoo_lists_only_the_top_level_configs(cli):
    result = cli("zoo", "--json")
    assert result.code == 0
    names = {entry["name"] for entry in json.loads(result.out)}
    assert "lenet5" in names and not names & set(IDS)
