"""Building one layer or a small stack from YAML text, and the one-thread setting
for tests whose tensors are tiny."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.model.build import build_layer


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on a shared CPU, waking a second thread for each op costs
    more than the op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def yaml_of(width: int, height: int, depth: int, *layers: str) -> str:
    head = f"model:\n  layers:\n    - input: {{width: {width}, height: {height}, depth: {depth}}}\n"
    return head + "".join(f"    - {layer}\n" for layer in layers)


def plan_of(width: int, height: int, depth: int, *layers: str) -> cnnzoo.Plan:
    return cnnzoo.plan_experiment(cnnzoo.parse_config(yaml_of(width, height, depth, *layers)))


def layer_of(width: int, height: int, depth: int, layer: str) -> torch.nn.Module:
    return build_layer(plan_of(width, height, depth, layer).layers[1])
