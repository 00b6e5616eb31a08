"""The configs that ship with cnnzoo: the one place that knows where their folder is,
the configs and search spaces in it, and the zoo's measured records beside them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cnnzoo.errors import CnnzooError

BUNDLED_DIRS = (
    Path(__file__).resolve().parents[1] / "configs",  # installed wheel: cnnzoo/configs
    Path(__file__).resolve().parents[3] / "configs",  # source checkout: configs/
)
RESULTS_FILE = "results.json"
RESULTS_FORMAT = "cnnzoo-zoo-results-1"


def bundled_dir() -> Path | None:
    """The folder of the bundled configs (installed package or source checkout)."""
    return next((d for d in BUNDLED_DIRS if d.is_dir()), None)


def bundled_configs() -> dict[str, Path]:
    """Bundled configs by name (the file stem)."""
    directory = bundled_dir()
    return {} if directory is None else {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def bundled_file(name: str) -> Path | None:
    """A bundled config in a folder of its own, by FOLDER/NAME (`imagenet/resnet18`):
    architectures kept apart from the zoo's configs (nothing here trains them); None
    when there is none."""
    directory = bundled_dir()
    parts = name.removesuffix(".yaml").split("/")
    if directory is None or len(parts) != 2 or not all(_NAME.fullmatch(p) for p in parts):
        return None
    path = directory / parts[0] / f"{parts[1]}.yaml"
    return path if path.is_file() else None


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a file or folder name, never '..'


def bundled_spaces() -> dict[str, Path]:
    """Bundled search spaces by name (configs/spaces/NAME.yaml)."""
    directory = bundled_dir()
    if directory is None or not (directory / "spaces").is_dir():
        return {}
    return {p.stem: p for p in sorted((directory / "spaces").glob("*.yaml"))}


def read_measured(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Measured results by config name, from DIRECTORY/results.json (none: {})."""
    directory = bundled_dir() if directory is None else directory
    if directory is None or not (directory / RESULTS_FILE).exists():
        return {}
    path = directory / RESULTS_FILE
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CnnzooError(f"cannot read the measured results {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(
        data.get("configs"), dict
    ):
        raise CnnzooError(
            f"{path} is not a results file of this cnnzoo (format {RESULTS_FORMAT}); "
            "regenerate it with scripts/zoo_results.py"
        )
    return data["configs"]


def write_measured(records: dict[str, dict[str, Any]], directory: Path) -> Path:
    """Write DIRECTORY/results.json: `records` by config name, sorted."""
    from cnnzoo.utils.files import atomic_write_text

    path = directory / RESULTS_FILE
    data = {"format": RESULTS_FORMAT, "configs": dict(sorted(records.items()))}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
