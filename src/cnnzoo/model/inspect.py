"""What a built network holds: every layer of its plan paired with the module that
computes it, and the first layer's filters as images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnzoo.layers.spec import LayerPlan
from cnnzoo.model.build import Network


def _child_modules(module: nn.Module) -> list[nn.Module]:
    """The modules of a nested stack, in the order of the plan's children: a
    Sequential's items, or those of each Sequential or ModuleList inside (residual:
    body, shortcut; branches: its paths)."""
    if isinstance(module, nn.Sequential):
        return list(module)
    return [item for child in module.children()
            if isinstance(child, (nn.Sequential, nn.ModuleList)) for item in child]


def layer_modules(model: Network) -> list[tuple[LayerPlan, nn.Module]]:
    """Every layer of the plan, nested ones included, with the module that computes it."""
    pairs: list[tuple[LayerPlan, nn.Module]] = []

    def visit(plans: tuple[LayerPlan, ...], modules: list[nn.Module]) -> None:
        for plan, module in zip(plans, modules, strict=False):
            pairs.append((plan, module))
            children = _child_modules(module) if plan.children else []
            if len(children) == len(plan.children):
                visit(plan.children, children)

    visit(model.plan.layers, list(model.layers))
    return pairs


def first_layer_filters(model: Network) -> tuple[LayerPlan, np.ndarray] | None:
    """The first weighted layer's filters as (F, C, kh, kw): a conv's kernels, a local
    layer's at its centre position, or the rows of an fc that sees the input image,
    each reshaped to the image. None when the first weighted layer is none of these
    (nothing there looks like an image)."""
    for plan, module in layer_modules(model):
        if plan.children:
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
            continue  # no weights, or batchnorm's per-channel scale
        values = weight.detach().float().cpu()
        if values.dim() == 4:
            return plan, values.numpy()
        if values.dim() == 6:
            # A locally-connected layer: (out_h, out_w, F, kh, kw, C), a filter bank per
            # output position; the centre position's bank stands for them.
            centre = values[values.shape[0] // 2, values.shape[1] // 2]
            return plan, centre.permute(0, 3, 1, 2).numpy()
        volume = plan.input
        if values.dim() == 2 and not volume.flat and values.shape[1] == volume.numel:
            return plan, values.view(-1, volume.depth, volume.height, volume.width).numpy()
        return None
    return None
