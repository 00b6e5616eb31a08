"""`cnnzoo predict`: classify image files, folders, globs and lists with a trained run.

The paths stream from `inputs` in batches; worker processes read and decode the
images (the same reader and limits as everywhere, data/images.py) a few batches ahead
of the network (and this process too, whenever it would otherwise wait), and the
answers go to `outputs` as they come. At most `4 x workers + 1` batches are held, so a
list of a million paths costs the memory of a few batches. An unreadable image is
answered with its error and the rest predicted; the command fails at the end, naming
the first few.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnzoo.errors import CnnzooError, DataError
from cnnzoo.layers.shapes import Volume
from cnnzoo.tools.predict.predictor import Prediction, Predictor, decode

NAMED_ERRORS = 10  # the unreadable images the final message names; the rest are counted
Decoded = list[tuple[np.ndarray | None, str | None]]


def default_workers() -> int:
    """One decoding process per core but one, which the network uses: at least one."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def decode_chunk(paths: list[str], volume: tuple[int, int, int]) -> Decoded:
    """Pixels or the error for each path; runs in a worker process."""
    decoded: Decoded = []
    for path in paths:
        try:
            decoded.append((decode(path, Volume(*volume)), None))
        except DataError as exc:
            decoded.append((None, str(exc)))
    return decoded


def _quiet_worker() -> None:
    import torch

    # As torch's DataLoader does in its workers: one thread each, so that N decoding
    # processes do not start N thread pools on cores the network is using.
    torch.set_num_threads(1)


def stream_predictions(predictor: Predictor, paths: Iterable[Path], batch_size: int = 64,
                       workers: int | None = None, top: int | None = None
                       ) -> Iterator[Prediction]:
    """Predictions for `paths`, in order, batch by batch. Images are decoded in `workers`
    processes (None: default_workers(); 0: in this process), unless they all fit in one
    batch, where starting processes would cost more than it saves."""
    if batch_size < 1:
        raise CnnzooError(f"--batch-size must be at least 1. Received: {batch_size}")
    volume = predictor_volume(predictor)
    chunks = _batched((str(p) for p in paths), batch_size)
    head = list(itertools.islice(chunks, 2))
    workers = default_workers() if workers is None else workers
    if len(head) < 2 or workers == 0:
        for chunk in itertools.chain(head, chunks):
            yield from _answer(predictor, chunk, decode_chunk(chunk, volume), top)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers, initializer=_quiet_worker) as pool:
        yield from _pipeline(predictor, pool, workers, itertools.chain(head, chunks), top)


def _pipeline(predictor: Predictor, pool: Any, workers: int, chunks: Iterator[list[str]],
              top: int | None) -> Iterator[Prediction]:
    """Keep `2 x workers` batches decoding in the pool and answer them in order. While
    the next batch is not decoded yet, this process decodes the following ones itself
    rather than wait: with a small network it is mostly waiting, and then it adds a
    decoder."""
    volume = predictor_volume(predictor)
    pending: deque = deque()  # (names, AsyncResult or decoded), in input order
    in_pool = 0
    exhausted = False
    while True:
        while not exhausted and in_pool < 2 * workers:
            chunk = next(chunks, None)
            exhausted = chunk is None
            if chunk is not None:
                pending.append((chunk, pool.apply_async(decode_chunk, (chunk, volume))))
                in_pool += 1
        if not pending:
            return
        names, job = pending[0]
        if isinstance(job, list) or job.ready():
            pending.popleft()
            in_pool -= not isinstance(job, list)
            yield from _answer(predictor, names, job if isinstance(job, list) else job.get(),
                               top)
        elif not exhausted and len(pending) <= 4 * workers:  # bounded, still
            chunk = next(chunks, None)
            exhausted = chunk is None
            if chunk is not None:
                pending.append((chunk, decode_chunk(chunk, volume)))
        else:
            job.wait()


def predictor_volume(predictor: Predictor) -> tuple[int, int, int]:
    """The predictor's input W x H x D as plain numbers, for the worker processes."""
    return predictor.volume.width, predictor.volume.height, predictor.volume.depth


def _batched(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _answer(predictor: Predictor, names: list[str], decoded: Decoded,
            top: int | None) -> list[Prediction]:
    return predictor.answer(names, [pixels for pixels, _ in decoded],
                            [error for _, error in decoded], top)


@dataclass
class Tally:
    """How many images were answered, and the first few errors, for the final message."""

    images: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # at most NAMED_ERRORS

    def add(self, item: Prediction) -> None:
        self.images += 1
        if item.error is not None:
            self.failed += 1
            if len(self.errors) < NAMED_ERRORS:
                self.errors.append(item.error)

    def failure(self) -> CnnzooError | None:
        """The error to exit with when some images could not be read, or None."""
        if not self.failed:
            return None
        if self.images == 1:
            return CnnzooError(self.errors[0])
        more = self.failed - len(self.errors)
        named = "; ".join(self.errors) + (f"; and {more:,} more" if more else "")
        return CnnzooError(f"{named} ({self.failed:,} of {self.images:,} images could not "
                           "be read; the others are answered)")
