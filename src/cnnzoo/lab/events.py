"""A run's live events as Server-Sent Events, read from what the run already writes:
an `epoch` event for each row of metrics.csv (a late client first gets the rows so
far), a `progress` event from the trainer's progress file at least every 2 s while the
run lives, and one `end` event (finished, stopped, or failed with its message)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cnnzoo.errors import CheckpointError
from cnnzoo.lab.runs import PROGRESS, RunManager
from cnnzoo.runs import rundir

POLL_SECONDS = 0.1  # how often the files are looked at: an event is at most this late
PROGRESS_EVERY = 2.0  # the longest time between two progress events while the run lives


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event: its name and its JSON data."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FileWatch:
    """A file that is read again only when its size or time has changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: tuple[int, int] | None = None

    def changed(self) -> bool:
        try:
            stat = self.path.stat()
        except OSError:
            return False
        key = (stat.st_size, stat.st_mtime_ns)
        if key == self.seen:
            return False
        self.seen = key
        return True


async def run_events(manager: RunManager, name: str) -> AsyncIterator[bytes]:
    """The events of run `name` until it ends (or the lab does); a run that has ended
    gives its rows and its `end` at once."""
    path = manager.run_dir(name)
    metrics = FileWatch(path / rundir.METRICS)
    progress = FileWatch(manager.lab_dir(name) / PROGRESS)
    sent_rows = 0
    last_progress: dict[str, Any] | None = None
    last_sent = time.monotonic()
    while not manager.closing.is_set():
        status, message = manager.status(name)
        if metrics.changed():
            rows = _rows(path)
            if len(rows) < sent_rows:  # a resumed run cut its log back to its checkpoint
                sent_rows = len(rows)
            for row in rows[sent_rows:]:
                yield sse("epoch", row)
            sent_rows = len(rows)
        if status != "running":
            yield sse("end", {"status": status, "message": message})
            return
        if progress.changed():
            last_progress = _read_progress(progress.path) or last_progress
            if last_progress is not None:
                yield sse("progress", last_progress)
                last_sent = time.monotonic()
        if time.monotonic() - last_sent >= PROGRESS_EVERY:
            # Between steps (validation, a checkpoint) the file is not rewritten: say
            # again where the run is, so that a client knows it lives.
            yield sse("progress", last_progress or {"epoch": None, "starting": True})
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)


def _rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of metrics.csv; a row being appended waits for the next look."""
    try:
        rows = rundir.read_metrics(path)
    except CheckpointError:
        return []
    return [row for row in rows if None not in row.values() and None not in row]


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # replaced atomically, so only a missing file gets here
    return data if isinstance(data, dict) else None
