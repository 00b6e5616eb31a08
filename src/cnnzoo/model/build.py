"""From a layer plan to an `nn.Module`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.config.yamlio import dump_yaml
from cnnzoo.layers.spec import LayerPlan
from cnnzoo.model.plan import Plan, plan_experiment


class Network(nn.Module):
    """The network of an experiment file.

    `layers[i]` is row i of `cnnzoo summary` (row 0 is the input), so hooks,
    state_dict keys (`layers.1.weight`) and the summary speak of the same layers.
    """

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        self.layers = nn.Sequential(*(build_layer(p) for p in plan.layers))
        # A classifier may end in a 1x1xD volume (global pooling, a 1x1 conv);
        # its logits are still (B, D).
        self.flatten_output = not plan.output.flat and (plan.output.width, plan.output.height) == (
            1,
            1,
        )
        # Layers that also take the labels (a capsule decoder, masked by the true class).
        self.label_layers = tuple(i for i, p in enumerate(plan.layers) if p.type_name == "decoder")

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores (B, K). `labels` (training) go to the layers that use them."""
        if not self.label_layers:
            x = self.layers(x)
        else:
            for i, layer in enumerate(self.layers):
                x = layer(x, labels) if i in self.label_layers else layer(x)
        return x.flatten(1) if self.flatten_output else x

    def auxiliary_loss(self, images: torch.Tensor) -> torch.Tensor | float:
        """What the layers add to the training loss for the batch of the last forward
        pass on `images` (a decoder's reconstruction error); 0.0 for most networks."""
        return sum((self.layers[i].loss(images) for i in self.label_layers), 0.0)

    def __repr__(self) -> str:
        lines = [f"Network {self.plan.name!r}: {self.plan.total_params:,} params"]
        lines += _describe(self.plan.layers, "  ")
        return "\n".join(lines)


def _describe(plans: tuple[LayerPlan, ...], indent: str) -> list[str]:
    lines = []
    in_shortcut = False
    for plan in plans:
        if plan.label.startswith("shortcut ") and not in_shortcut:
            in_shortcut = True
            lines.append(f"{indent[:-2]}shortcut:")
        item = plan.spec.to_yaml()
        if plan.spec.is_group:
            head = f"- {plan.label}:"
        elif isinstance(item, dict) and plan.children:
            # Nested stacks print their own children below, not inline.
            name = plan.spec.type_name
            params = {k: v for k, v in item[name].items() if k not in ("layers", "paths")}
            head = f"- {name}: {_flow(params)}" if params else f"- {name}:"
        else:
            head = f"- {_flow(item)}"
        cost = f", {plan.params:,} params" if plan.params else ""
        lines.append(f"{indent}{head}".ljust(60) + f" # ({plan.index}) {plan.output}{cost}")
        if plan.children:
            lines += _describe(plan.children, indent + "    ")
    return lines


def _flow(value: object) -> str:
    return dump_yaml(value).strip().replace("\n", " ") if not isinstance(value, str) else value


def build_layer(plan: LayerPlan) -> nn.Module:
    return plan.spec.build(plan, build_layer)


def build_network(config_or_path: ExperimentConfig | Plan | str | Path) -> Network:
    """The `nn.Module` of an experiment: a config, a plan, a file path or a bundled name
    (with trained weights: `cnnzoo.build_model(..., pretrained=...)`, cnnzoo.runs.pretrained)."""
    if isinstance(config_or_path, Plan):
        plan = config_or_path
    else:
        config = (
            config_or_path
            if isinstance(config_or_path, ExperimentConfig)
            else load_config(config_or_path)
        )
        plan = plan_experiment(config)
    return Network(plan)
