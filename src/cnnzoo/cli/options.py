"""What every `cnnzoo` command shares: the Typer app, its option types and choices,
and the checks of options that more than one command takes. No torch here."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cnnzoo.config.experiment import TTA_VIEWS
from cnnzoo.layers.conv import IMPLS
from cnnzoo.layers.freq import SHAPES
from cnnzoo.layers.kernels import FIXED_KERNELS
from cnnzoo.layers.padding import PADDING_MODES

app = typer.Typer(
    name="cnnzoo",
    help="Convolutional networks described in YAML: build, summarise, train, evaluate.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

USER_ERROR = 2


def complete_config(incomplete: str) -> list[str]:
    """Shell completion for --config: bundled config names, then YAML files and folders."""
    from cnnzoo.config.bundled import bundled_configs

    names = [name for name in bundled_configs() if name.startswith(incomplete)]
    folder, _, start = incomplete.rpartition("/")
    try:
        entries = sorted(Path(folder or ".").iterdir())
    except OSError:
        entries = []
    paths = [f"{folder + '/' if folder else ''}{p.name}{'/' if p.is_dir() else ''}"
             for p in entries if p.name.startswith(start) and not p.name.startswith(".")
             and (p.is_dir() or p.suffix in (".yaml", ".yml"))]
    return names + paths


def _version(value: bool) -> None:
    if value:
        from cnnzoo import __version__

        print(f"cnnzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="print cnnzoo's version and exit")
    ] = False,
) -> None:
    """Convolutional networks described in YAML: build, summarise, train, evaluate."""


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of `values`, in their order: Typer checks the option against it and
    --help lists it."""
    return Enum(name, [(value, value) for value in values], type=str)


# Choices the parser checks and --help lists, taken from the tuples that the layer types
# and the config check against themselves (importing those needs no torch).
class EvalSplit(str, Enum):
    test = "test"
    val = "val"
    train = "train"


TtaMode = choices("TtaMode", TTA_VIEWS)
PaddingMode = choices("PaddingMode", PADDING_MODES)
FreqShape = choices("FreqShape", SHAPES)
ConvImpl = choices("ConvImpl", IMPLS)
FixedKernel = choices("FixedKernel", FIXED_KERNELS)


ConfigOption = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="an experiment file, or the name of a bundled config (cnnzoo zoo)",
        autocompletion=complete_config,
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a key, e.g. --set train.epochs=3 (repeatable)"),
]


def check_device(device: str) -> None:
    """--device checked like the YAML key train.device (auto, cpu, cuda, cuda:N, mps)."""
    from cnnzoo.config.experiment import TrainConfig
    from cnnzoo.utils.params import Where

    TrainConfig.__dataclass_fields__["device"].metadata["kind"].parse(
        device, "--device", Where("--device", ())
    )


RunSource = Annotated[
    str, typer.Argument(help="a run directory made by cnnzoo train; with --pretrained, a "
                        "bundled config's name, a packed .safetensors file or an "
                        "https://...#sha256=HEX URL")
]
PretrainedFlag = Annotated[
    bool, typer.Option("--pretrained", help="use the trained weights shipped with cnnzoo "
                       "for the config SOURCE (cnnzoo zoo lists them), or those of a packed "
                       "file or URL")
]


def run_dir_of(source: str, pretrained: bool) -> Path:
    """The run directory to read: SOURCE itself, or its verified pretrained weights
    unpacked into the cache."""
    if not pretrained:
        return Path(source)
    from cnnzoo.runs.pretrained import unpack

    return unpack(source)
