"""`cnnzoo zoo`: the bundled configs, what they cost and how well they did."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def zoo(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The bundled configs (use their names with --config): dataset, input, params,
    mult-adds and the test accuracy measured by scripts/zoo_results.py."""
    from cnnzoo.zoo.catalog import format_zoo, zoo_entries, zoo_json

    entries = zoo_entries()
    if as_json:
        print(json.dumps(zoo_json(entries), indent=2))
    else:
        print(format_zoo(entries))
