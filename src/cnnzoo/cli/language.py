"""The commands on the model language itself: summary, config, layers, schema.
None imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cnnzoo.cli.options import (
    ConfigOption,
    SetOption,
    complete_config,
)


def summary(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    overrides: SetOption = None,
) -> None:
    """Layer by layer: output volume W x H x D, params, mult-adds, receptive field, and
    what a fully connected layer between the same volumes would cost."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.model.plan import plan_experiment
    from cnnzoo.model.summary import format_summary, summary_dict

    plan = plan_experiment(load_config(config, overrides or []))
    if as_json:
        print(json.dumps(summary_dict(plan), indent=2))
    else:
        print(format_summary(plan))


def config_(
    config: Annotated[
        str, typer.Argument(help="an experiment file, or the name of a bundled config",
                            autocompletion=complete_config)
    ],
    overrides: SetOption = None,
) -> None:
    """The fully resolved config as YAML, every default filled in: what `cnnzoo train`
    would use, and valid as a --config file itself."""
    from cnnzoo.config.experiment import load_config

    print(load_config(config, overrides or []).to_yaml().rstrip("\n"))


def layers(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every layer type with its parameters and defaults."""
    from cnnzoo.layers.registry import layer_table
    from cnnzoo.utils.format import format_table

    table = layer_table()
    if as_json:
        print(json.dumps(table, indent=2))
        return
    for entry in table:
        primary = next((p["name"] for p in entry["params"] if p["primary"]), None)
        shorthand = f"   (- {entry['type']}: N sets {primary})" if primary else ""
        print(f"{entry['type']}: {entry['doc']}{shorthand}")
        rows = [
            (f"  {p['name']}", p["kind"], _default_text(p["default"]), p["doc"])
            for p in entry["params"]
        ]
        if rows:
            print(format_table(("", "", "", ""), rows, set()).split("\n", 1)[1])
        print()


def _default_text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to this file")] = None,
) -> None:
    """JSON Schema of the experiment file, for editors (yaml-language-server)."""
    from cnnzoo.config.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        from cnnzoo.utils.files import atomic_write_text, check_writable

        check_writable(out)
        atomic_write_text(out, text)
