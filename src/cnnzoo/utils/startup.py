"""Starting the `cnnzoo` command: Ctrl-C in the first second (while torch is imported)
ends it quietly, as Ctrl-C at any later moment does, instead of with a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def started_as_command() -> bool:
    """Whether this process is the `cnnzoo` command (`cnnzoo ...` or `python -m cnnzoo
    ...`) rather than a program that imports cnnzoo, which keeps Python's behaviour."""
    argv = list(getattr(sys, "orig_argv", []))
    as_module = any(argv[i:i + 2] == ["-m", "cnnzoo"] for i in range(len(argv) - 1))
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    return as_module or script == "cnnzoo"


@contextlib.contextmanager
def quiet_interrupt() -> Iterator[None]:
    """In the `cnnzoo` command, turn a KeyboardInterrupt into `interrupted` and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        if not started_as_command():
            raise
        print("interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
