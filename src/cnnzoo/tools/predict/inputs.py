"""What `cnnzoo predict` reads: the image paths that its INPUTS name, one at a time.

An input is an image file, a folder (every file below it with an image suffix, in
sorted order), a glob (`'shots/*.png'`, `'**'` recursive) or `@list.txt` (one path a
line; blank lines and lines starting with `#` skipped). Nothing is collected: a list
of a million paths is read line by line as the predictor asks for the next, so memory
stays bounded however long the list is. A path that does not exist is passed on all
the same, to be reported as unreadable beside the answers for the others.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from cnnzoo.data.pipeline import IMAGE_SUFFIXES
from cnnzoo.errors import CnnzooError

GLOB_CHARACTERS = frozenset("*?[")


def iter_inputs(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """The image paths that `inputs` name, lazily, in order."""
    for item in inputs:
        text = str(item)
        if text.startswith("@"):
            yield from iter_list_file(Path(text[1:]))
        elif Path(text).is_dir():
            yield from iter_folder(Path(text))
        elif GLOB_CHARACTERS & set(text) and not Path(text).exists():
            yield from iter_glob(text)
        else:
            yield Path(text)


def iter_list_file(path: Path) -> Iterator[Path]:
    """The paths in a list file, one a line; relative ones are taken from the current
    folder, as a shell would take them."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                entry = line.strip()
                if entry and not entry.startswith("#"):
                    yield Path(entry)
    except OSError as exc:
        raise CnnzooError(f"cannot read the list @{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CnnzooError(f"@{path} is not a UTF-8 text file of paths, one a line") from None


def iter_folder(folder: Path) -> Iterator[Path]:
    """Every file under `folder` with an image suffix, depth first, names sorted, so two
    runs list the same files in the same order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name


def iter_glob(pattern: str) -> Iterator[Path]:
    """The files a glob matches, sorted; a pattern that matches nothing is passed on as
    it is, to be reported as unreadable like a missing file."""
    names = sorted(name for name in glob.glob(pattern, recursive=True) if Path(name).is_file())
    yield from (Path(name) for name in names) if names else (Path(pattern),)
