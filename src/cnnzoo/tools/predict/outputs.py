"""Where `cnnzoo predict` writes its answers: the terminal (lines, or `--json`), or a
file by its suffix (`.csv`, `.jsonl`, `.json`), one answer at a time as it comes.

A file is written under a temporary name and renamed when the last answer is in, so a
failed or interrupted run leaves no half-written file. Every format has the same
fields: the image, its top classes (name, index, probability or score) and an error
for an image that could not be read. The JSON of `.json`, `.jsonl` and `--json` is
the same for every image.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from cnnzoo.errors import CnnzooError
from cnnzoo.tools.predict.predictor import Prediction
from cnnzoo.utils.files import atomic_open, check_writable

Writer = Callable[[Prediction], None]
SUFFIXES = (".csv", ".jsonl", ".json")


def check_out(path: Path) -> None:
    """Refuse, before anything is predicted, an --out that cannot be written."""
    if path.suffix.lower() not in SUFFIXES:
        raise CnnzooError(f"--out {path}: write .csv, .jsonl or .json (the suffix picks the "
                          f"format). Received: {path.suffix or 'no suffix'}")
    check_writable(path)


def csv_header(top: int, kind: str) -> list[str]:
    """image, class_1, index_1, probability_1, ..., error."""
    columns = ["image"]
    for rank in range(1, top + 1):
        columns += [f"class_{rank}", f"index_{rank}", f"{kind}_{rank}"]
    return [*columns, "error"]


def csv_row(item: Prediction, top: int) -> list[str]:
    cells = [item.image]
    for rank in range(top):
        guess = item.top[rank] if rank < len(item.top) else None
        cells += ([guess.name, str(guess.index), repr(guess.value)] if guess else ["", "", ""])
    return [*cells, item.error or ""]


@contextlib.contextmanager
def open_writer(out: Path | None, as_json: bool, top: int, kind: str) -> Iterator[Writer]:
    """A function that writes one answer; to `out` by its suffix, else to stdout as
    JSON (`as_json`) or as lines (`image: class 91.2%, ...`)."""
    if out is None:
        if as_json:
            with _json_array(sys.stdout) as write:
                yield write
        else:
            yield _line
        return
    with atomic_open(out) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        suffix = out.suffix.lower()
        if suffix == ".csv":
            table = csv.writer(text)
            table.writerow(csv_header(top, kind))
            yield lambda item: table.writerow(csv_row(item, top))
        elif suffix == ".jsonl":
            yield lambda item: text.write(json.dumps(item.as_dict()) + "\n")
        else:
            with _json_array(text) as write:
                yield write
        text.flush()
        text.detach()  # the atomic writer syncs and closes the file itself


@contextlib.contextmanager
def _json_array(stream: TextIO) -> Iterator[Writer]:
    """A JSON list written item by item, laid out as json.dumps(..., indent=2) would."""
    count = 0

    def write(item: Prediction) -> None:
        nonlocal count
        stream.write(("[\n" if count == 0 else ",\n")
                     + textwrap.indent(json.dumps(item.as_dict(), indent=2), "  "))
        count += 1

    yield write
    stream.write("\n]\n" if count else "[]\n")


def _line(item: Prediction) -> None:
    if item.ok:
        guesses = ", ".join(f"{g.name} {g.value:.1%}" if item.kind == "probability"
                            else f"{g.name} score {g.value:.3f}" for g in item.top)
        print(f"{item.image}: {guesses}", flush=True)


def progress_bar(wanted: bool) -> Any:
    """A bar on stderr counting the images answered, where stderr is a terminal and the
    answers do not go to the terminal as lines (they would tear the bar)."""
    from tqdm import tqdm

    return tqdm(unit=" images", file=sys.stderr, disable=None if wanted else True,
                mininterval=0.5, leave=False)
