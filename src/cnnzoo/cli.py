"""The `cnnzoo` command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cnnzoo.errors import CnnzooError

app = typer.Typer(
    name="cnnzoo",
    help="Convolutional networks described in YAML: build, summarise, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

USER_ERROR = 2

ConfigOption = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="an experiment file, or the name of a bundled config (cnnzoo zoo)"
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a key, e.g. --set train.epochs=3 (repeatable)"),
]


@app.command()
def summary(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    overrides: SetOption = None,
) -> None:
    """Layer by layer: output volume W x H x D, params, mult-adds, receptive field, and
    what a fully connected layer between the same volumes would cost."""
    from cnnzoo.config import load_config
    from cnnzoo.plan import plan_experiment
    from cnnzoo.summary import format_summary, summary_dict

    plan = plan_experiment(load_config(config, overrides or []))
    if as_json:
        print(json.dumps(summary_dict(plan), indent=2))
    else:
        print(format_summary(plan))


@app.command()
def layers(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every layer type with its parameters and defaults."""
    from cnnzoo.registry import layer_table
    from cnnzoo.summary import format_table

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


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to this file")] = None,
) -> None:
    """JSON Schema of the experiment file, for editors (yaml-language-server)."""
    from cnnzoo.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        from cnnzoo.files import atomic_write_text

        atomic_write_text(out, text)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; user errors print one line."""
    try:
        app(args=argv, prog_name="cnnzoo")
    except CnnzooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    except SystemExit as exc:  # how Typer reports --help, usage errors and Exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    """The `cnnzoo` console script."""
    sys.exit(run())
