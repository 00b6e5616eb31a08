"""`cnnzoo summary`: the layer table in cs231n notation, and the same as JSON.

Everything here is read off the plan; the tests check the plan against a real
forward pass, `sum(p.numel())` and `FlopCounterMode`.
"""

from __future__ import annotations

from typing import Any

from cnnzoo.layers.shapes import format_pair
from cnnzoo.layers.spec import LayerPlan
from cnnzoo.model.plan import Plan
from cnnzoo.utils.format import format_table

BYTES_PER_VALUE = 4  # fp32 activations

_COLUMNS = ("#", "layer", "output (WxHxD)", "params", "mult-adds", "receptive field",
            "dense params")
_RIGHT = {"params", "mult-adds", "dense params"}


def _rows(plans: tuple[LayerPlan, ...], depth: int = 0) -> list[tuple[str, ...]]:
    rows = []
    for plan in plans:
        indent = "  " * depth
        rows.append(
            (
                plan.index,
                f"{indent}{plan.label}",
                str(plan.output),
                f"{plan.params:,}" if plan.params else "",
                f"{plan.macs:,}" if plan.macs else "",
                format_pair(plan.receptive_field),
                f"{plan.dense_params:,}" if plan.dense_params else "",
            )
        )
        rows += _rows(plan.children, depth + 1)
    return rows


def format_summary(plan: Plan) -> str:
    """The layer table with totals, as `cnnzoo summary` prints it."""
    table = format_table(_COLUMNS, _rows(plan.layers), _RIGHT)
    totals = summary_totals(plan)
    lines = [
        f"{plan.name}: {plan.input} -> {plan.output}",
        "",
        table,
        "",
        f"params       {totals['total_params']:,}"
        + (
            f" ({totals['trainable_params']:,} trainable)"
            if totals["trainable_params"] != totals["total_params"]
            else ""
        ),
        f"mult-adds    {totals['total_macs']:,} per image",
        f"activations  {_bytes(totals['activation_bytes'])} per image (fp32, forward)",
    ]
    dense = totals["dense_params"]
    weighted = totals["weighted_params"]
    if dense and weighted:
        lines.append(
            f"dense        {dense:,} params for fully connected layers between the same "
            f"volumes ({dense / weighted:,.1f}x the {weighted:,} of the layers above)"
        )
    return "\n".join(lines)


def summary_totals(plan: Plan) -> dict[str, int]:
    leaves = [p for p in plan.walk() if not p.children]
    weighted = [p for p in leaves if p.dense_params]
    return {
        "total_params": plan.total_params,
        "trainable_params": plan.total_params - sum(p.detail.get("frozen_params", 0)
                                                    for p in leaves),
        "total_macs": plan.total_macs,
        "activation_bytes": plan.activation_values * BYTES_PER_VALUE,
        "dense_params": sum(p.dense_params or 0 for p in weighted),
        "weighted_params": sum(p.params for p in weighted),
    }


def _layer_dict(plan: LayerPlan, position: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": position,
        "path": plan.index,
        "type": plan.type_name,
        "label": plan.label,
        "input": plan.input.as_list(),
        "output": plan.output.as_list(),
        "params": plan.params,
        "macs": plan.macs,
        "receptive_field": [plan.receptive_field[1], plan.receptive_field[0]],
        "dense_params": plan.dense_params,
        "where": plan.where.label,
    }
    if plan.output.capsule_dim:
        # `output` stays [W, H, D]; a capsule volume's D is capsules x dim.
        entry["capsules"] = [plan.output.capsules, plan.output.capsule_dim]
    if plan.children:
        entry["children"] = [_layer_dict(c, i) for i, c in enumerate(plan.children)]
    return entry


def summary_dict(plan: Plan) -> dict[str, Any]:
    """The summary as JSON-ready data: `output` is [width, height, depth]."""
    return {
        "name": plan.name,
        "input": plan.input.as_list(),
        "output": plan.output.as_list(),
        "layers": [_layer_dict(p, i) for i, p in enumerate(plan.layers)],
        **summary_totals(plan),
    }


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"
