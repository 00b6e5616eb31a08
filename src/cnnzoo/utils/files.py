"""Writing files so that a crash never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cnnzoo.errors import CnnzooError


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Write to a temp file in the same directory, fsync it, then rename over `path`.

    Readers see the old file or the new one, never a mix; a failure (full disk,
    crash, exception) leaves the old file as it was and removes the temp file.
    """
    path = Path(path)
    if path.is_dir():
        raise CnnzooError(f"{path} is a directory; give a file name")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CnnzooError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would,
        # or keep the mode of the file it replaces.
        os.fchmod(fd, _target_mode(path))
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise CnnzooError(f"cannot write {path}: {exc.strerror}") from exc
        raise
    _fsync_dir(directory)


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable(path: str | Path, option: str = "--out", *, folder: bool = False) -> None:
    """Refuse an output that cannot be written, before the work that would fill it.

    `path` is a file to write, or with `folder` a directory to create or write into.
    The nearest folder that exists is tried with a real file, created and removed at
    once: permission bits, a read-only filesystem, /proc and quotas each answer in their
    own way, and only trying tells them all apart (root may write where the bits say no).
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise CnnzooError(f"{option} {path} is a directory; give a file name")
    if path.exists() and not path.is_dir() and folder:
        raise CnnzooError(f"{option} {path} is a file; give a directory")
    base = path if folder else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise CnnzooError(f"{option} {path}: {base} is a file, not a folder; choose another "
                          f"{option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".cnnzoo-write-check-", dir=base)
    except OSError as exc:
        raise CnnzooError(f"{option} {path} cannot be written: {_why(exc, base)}; choose "
                          f"another {option}") from None
    os.close(fd)
    os.unlink(probe)


def _why(exc: OSError, base: Path) -> str:
    if exc.errno == errno.EROFS:
        return f"{base} is on a read-only filesystem"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to create files in {base}"
    if exc.errno == errno.ENOENT:  # /proc, /sys: folders that hold no files of ours
        return f"{base} does not take new files"
    return f"{base}: {exc.strerror or exc}"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Atomically write `path` with a function that writes to a binary handle."""
    with atomic_open(path) as handle:
        write(handle)
