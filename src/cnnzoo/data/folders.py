"""Finding the images of a folder dataset (root/<class>/**/*.png), with a warning for
what is silently useless: a class folder without images and a broken symlink."""

from __future__ import annotations

import sys
from pathlib import Path


def scan_class_folders(root: Path, classes: list[str],
                       suffixes: frozenset[str] | set[str]) -> list[tuple[Path, int]]:
    """(path, label) of every image under root/<class>, in class and then path order."""
    samples = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        found = 0
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() and not path.exists():
                warn(f"{path} is a broken symbolic link; skipped")
            elif path.is_file() and path.suffix.lower() in suffixes:
                samples.append((path, label))
                found += 1
        if not found:
            warn(f"the class folder {folder} has no images ({', '.join(sorted(suffixes))}); "
                 f"class {label} '{name}' will never be seen")
    return samples


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
