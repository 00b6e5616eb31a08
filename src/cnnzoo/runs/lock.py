"""Who trains into a run directory: an exclusive OS file lock, held for as long as a
process writes the run.

The lock is `fcntl.flock` on `RUN_DIR/train.lock`, whose text is the holder's
process id. The kernel drops a flock when the last descriptor of its open file is
closed, which happens when the process ends for any reason, SIGKILL included: a
dead run never leaves a stale lock, whatever the file still says. Readers (eval,
predict, export, compare) take no lock: every file they read is replaced
atomically, so they always see one whole checkpoint.

A new run directory is created with `os.mkdir`, which either creates it or fails;
two commands racing for the same `--out` cannot both pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from cnnzoo.errors import CnnzooError

LOCK = "train.lock"

P = ParamSpec("P")
R = TypeVar("R")


class RunBusy(CnnzooError):
    """Another live process holds the run directory."""

    def __init__(self, path: Path, pid: int | None, action: str) -> None:
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        stop = f"wait for it to finish or stop it (kill {pid})" if pid is not None else (
            "wait for it to finish")
        super().__init__(f"cannot {action} {path}: {holder} is training into it; {stop}")


class RunLock:
    """An exclusive lock on one run directory, held by this process until `release`."""

    def __init__(self, path: Path, handle: int) -> None:
        self.path = path
        self._handle: int | None = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing drops the flock
            self._handle = None


# Locks this process holds, by resolved run directory: flock conflicts between two
# descriptors of one process too, so a second claim here must reuse the first.
_HELD: dict[Path, RunLock] = {}


def _read_pid(handle: int) -> int | None:
    try:
        text = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _holder_pid(handle: int) -> int | None:
    """The pid in a lock file whose lock is held. The holder writes it just after it
    takes the lock, so a contender that lost the race by microseconds waits a moment
    for it (at most half a second) rather than name no process."""
    for _ in range(50):
        pid = _read_pid(handle)
        if pid is not None:
            return pid
        time.sleep(0.01)
    return None


def lock_run(path: Path, action: str = "train into") -> RunLock:
    """Take the run directory's lock, or raise `RunBusy` naming the process that has it."""
    key = path.resolve()
    if key in _HELD and _HELD[key].held:
        return _HELD[key]
    try:
        handle = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise CnnzooError(f"cannot lock the run directory {path}: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder_pid(handle)
        os.close(handle)
        raise RunBusy(path, pid, action) from None
    except OSError as exc:
        os.close(handle)
        raise CnnzooError(f"cannot lock the run directory {path}: {exc.strerror}") from None
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
    lock = RunLock(path, handle)
    _HELD[key] = lock
    return lock


def holder(path: Path) -> int | None:
    """The process id training into `path`, or None when no live process holds it."""
    try:
        handle = os.open(path / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_pid(handle) or -1
    finally:
        os.close(handle)
    return None


def other_holder(path: Path) -> int | None:
    """The process id of another live process training into `path` (-1 when it cannot
    be read), or None when none does or this process holds it."""
    key = path.resolve()
    if key in _HELD and _HELD[key].held:
        return None
    return holder(path)


def refuse_live(path: Path, action: str) -> None:
    """Raise `RunBusy` when a live process trains into `path` (and it is not this one):
    for resuming, tuning trials and anything else that must not write into a run that
    is still changing under it."""
    pid = other_holder(path)
    if pid is not None:
        raise RunBusy(path, pid if pid > 0 else None, action)


def claim_new_run_dir(path: Path, has_run: Callable[[Path], bool], *,
                      exclusive: bool = False) -> RunLock:
    """Create `path` and lock it, or lock it if it exists and is empty of runs.

    `os.mkdir` is atomic: of two commands racing for one directory, one creates it.
    An existing directory (made by hand, or by `--out` on a restart) is taken when its
    lock is free and `has_run` says it holds no run, both checked under the lock;
    with `exclusive`, it raises FileExistsError instead, for the caller to pick
    another name.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnzooError(f"cannot create the run directory {path}: {exc.strerror or exc}"
                          ) from None
    try:
        os.mkdir(path)
    except FileExistsError:
        if exclusive:
            raise
        if not path.is_dir():
            raise CnnzooError(f"--out {path} is a file; give a directory for the run") from None
    except OSError as exc:
        raise CnnzooError(f"cannot create the run directory {path}: {exc.strerror}") from None
    lock = lock_run(path)
    if has_run(path):
        release(lock)
        raise CnnzooError(
            f"--out {path} already holds a run; continue it with `cnnzoo train --resume {path}` "
            "or choose another --out"
        )
    return lock


def release(lock: RunLock) -> None:
    lock.release()
    _HELD.pop(lock.path.resolve(), None)


def releases_run_locks(func: Callable[P, R]) -> Callable[P, R]:
    """Release, when `func` returns or raises, every run lock it took: an exception's
    traceback keeps the frame (and the lock) alive, and a test or a tuner that goes on
    in the same process must be able to resume the run."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with held_locks():
            return func(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def held_locks() -> Iterator[None]:
    """Release the run locks taken inside the block when it ends."""
    before = set(_HELD)
    try:
        yield
    finally:
        for key in set(_HELD) - before:
            release(_HELD[key])
