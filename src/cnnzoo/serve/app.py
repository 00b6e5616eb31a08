"""The HTTP app of `cnnzoo serve`: Starlette routes over a Predictor and a Batcher.

    POST /predict        one image (the raw body as image/* or application/octet-stream,
                         or one file in multipart/form-data) -> its top classes, the JSON
                         of one `cnnzoo predict --json` item
    POST /predict/batch  several files in multipart/form-data -> a list of such items
                         (an unreadable file gets its error, the others their answers)
    GET  /health         200 {"status": "ready"} once the network is loaded and warmed up;
                         503 while its process starts again after it ended
    GET  /labels         the class names, by index
    GET  /metadata       the network (config name, input volume, normalisation, params,
                         the weights' SHA-256, cnnzoo's version), the batching settings
                         and counters (requests, images, forward passes, images queued
                         and in the forward pass now, batch sizes), where the network
                         runs (its process id, how many times it started)

Every refusal is JSON `{"error": message}` with a 4xx status (413 over the size cap,
415 for another content type, 400 for a body that is no readable image), or 503 with
`Retry-After` when the queue is full; the server goes on serving either way. Every
answer carries the server's own time for it in a `Server-Timing` header (`app`, and for
a prediction its `read`, `queue` and `forward` parts: serve/timing.py). The network
runs in a process of its own (serve/network.py; 503 while it starts again after it
ended, 500 when it fails on a batch) or with `--network thread` in a thread of the
batcher's, with torch as one traced call where it can be (serve/onecall.py); large
images are decoded in threads, so the event loop only moves bytes and decodes
thumbnails (which cost less than the hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cnnzoo.errors import DataError
from cnnzoo.serve.batcher import Batcher, Counters, QueueFull
from cnnzoo.serve.network import NetworkDown, NetworkFailed, NetworkProcess, load_predictor
from cnnzoo.serve.options import ServeOptions
from cnnzoo.serve.timing import ServerTiming, Trace, trace_of
from cnnzoo.tools.predict.predictor import NamedBytes, Prediction, Predictor, decode


class Refused(Exception):
    """A request answered with an error status (4xx; 500 or 503 for the network's own
    failures) and a JSON message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


RAW_TYPES = ("image/", "application/octet-stream")
RETRY_AFTER_SECONDS = 1
# Images this small (body and pixels, both) are decoded on the event loop: for them (a
# 28 x 28 PNG takes 0.1 ms) the hop to a thread and back costs as much CPU as the
# decoding, and two thread wake-ups. Anything larger goes to a thread, so that neither
# a photograph nor a body padded with metadata holds up the other requests.
INLINE_BYTES = 64 << 10
INLINE_PIXELS = 64 * 64


def create_app(options: ServeOptions, predictor: Predictor | None = None,
               network: NetworkProcess | None = None) -> Starlette:
    """The app; it loads the network at start-up (or takes `predictor`, already loaded,
    and with `--network process` its `network`, started) and warms it up before it
    accepts requests."""
    state: dict[str, Any] = {"requests": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loaded = predictor or await run_in_threadpool(load_predictor, options)
        run, remote = await _start_network(options, loaded, network)
        volume = loaded.volume
        blank = np.zeros((volume.depth, volume.height, volume.width), np.uint8)
        batcher = Batcher(run, options.max_batch, options.max_wait_ms / 1000, options.max_queue)
        batcher.start()
        await batcher.submit([("warm-up", blank)])
        batcher.counters = Counters()  # the warm-up is no request's
        state.update(predictor=loaded, batcher=batcher, network=remote)
        yield
        await batcher.stop()
        if remote is not None:
            await remote.aclose()

    async def predict_one(request: Request) -> JSONResponse:
        state["requests"] += 1
        with state["batcher"].expecting():
            name, data = (await _files(request, options, 1))[0]
            item = await _decode(name, data, state["predictor"])
        if isinstance(item, Prediction):
            raise Refused(400, item.error or "")
        trace = trace_of(request.scope)
        answers = await _submit(state["batcher"], [item], trace)
        return JSONResponse(answers[0].as_dict())

    async def predict_batch(request: Request) -> JSONResponse:
        state["requests"] += 1
        if not _is_multipart(request):
            raise Refused(415, "POST /predict/batch takes multipart/form-data, one file part "
                          f"per image. Received: {_content_type(request) or 'no content type'}")
        with state["batcher"].expecting():
            files = await _files(request, options, options.max_files)
            items = await asyncio.gather(*(_decode(name, data, state["predictor"])
                                           for name, data in files))
        readable = [item for item in items if not isinstance(item, Prediction)]
        trace = trace_of(request.scope)
        answers = iter(await _submit(state["batcher"], readable, trace) if readable else ())
        return JSONResponse([(item if isinstance(item, Prediction) else next(answers)).as_dict()
                             for item in items])

    async def health(request: Request) -> JSONResponse:
        return await _health(state["network"])

    async def labels(request: Request) -> JSONResponse:
        return JSONResponse({"classes": state["predictor"].classes})

    async def metadata(request: Request) -> JSONResponse:
        counters, remote = state["batcher"].counters, state["network"]
        return JSONResponse({
            **state["predictor"].metadata,
            "serving": {**asdict(options), "pid": os.getpid(),
                        "network_pid": os.getpid() if remote is None else remote.pid,
                        "network_starts": 1 if remote is None else remote.starts},
            "counters": {"requests": state["requests"], "images": counters.images,
                         "forward_passes": counters.forward_passes,
                         "rejected": counters.rejected, "queued": state["batcher"].queued,
                         "running": state["batcher"].running,
                         "batch_sizes": {str(k): v for k, v in
                                         sorted(counters.batch_sizes.items())}},
        })

    routes = [Route("/predict", predict_one, methods=["POST"]),
              Route("/predict/batch", predict_batch, methods=["POST"]),
              Route("/health", health), Route("/labels", labels), Route("/metadata", metadata)]
    handlers = {Refused: _refused, HTTPException: _http_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                     middleware=[Middleware(ServerTiming)])


async def _submit(batcher: Batcher, items: list[tuple[str, np.ndarray]],
                  trace: Trace | None = None) -> list[Prediction]:
    """The batcher's answers; the request's trace gets `read` (until now), `queue` and
    `forward` for its Server-Timing header."""
    if trace is not None:
        trace.mark("read")
    try:
        return await batcher.submit(items, None if trace is None else trace.parts)
    except QueueFull as exc:
        raise Refused(503, f"the server is busy: {exc}; retry in {RETRY_AFTER_SECONDS} s"
                      ) from None
    except NetworkDown as exc:
        raise Refused(503, f"{exc}; retry in {RETRY_AFTER_SECONDS} s") from None
    except NetworkFailed as exc:
        raise Refused(500, str(exc)) from None


async def _start_network(options: ServeOptions, predictor: Predictor,
                         network: NetworkProcess | None) -> tuple[Callable, NetworkProcess | None]:
    """The batcher's run, and the network's process where it has one (started)."""
    if options.network == "thread":
        return _in_thread(predictor), None
    network = network or NetworkProcess(options, predictor)
    if network.process is None:
        await run_in_threadpool(network.start)
    return network.answer, network


async def _health(network: NetworkProcess | None) -> JSONResponse:
    """Ready, or 503 while the network's process is down; one that ended while idle is
    started again now, not at the next batch."""
    if network is not None and not network.up:
        with contextlib.suppress(NetworkDown):
            await network.ensure_up()
        if not network.up:
            return JSONResponse({"status": "the network's process is not running; it starts "
                                 "again"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return JSONResponse({"status": "ready"})


def _in_thread(predictor: Predictor) -> Callable[[list[tuple[str, np.ndarray]]],
                                                 list[Prediction]]:
    """The batcher's run for the network in this process (`--network thread`)."""

    def run(items: list[tuple[str, np.ndarray]]) -> list[Prediction]:
        try:
            return predictor.answer([name for name, _ in items],
                                    [pixels for _, pixels in items], [None] * len(items))
        except Exception as exc:  # the batch's requests hear of it; the server goes on
            raise NetworkFailed(f"the network failed on this batch: {type(exc).__name__}: "
                                f"{exc}") from exc

    return run


async def _decode(name: str, data: bytes, predictor: Predictor
                  ) -> tuple[str, np.ndarray] | Prediction:
    """(name, pixels), or a Prediction that carries the error of an unreadable image."""
    source = NamedBytes(data, name)
    try:
        if _small(data):
            return name, decode(source, predictor.volume)
        return name, await run_in_threadpool(decode, source, predictor.volume)
    except DataError as exc:
        return Prediction(name, error=str(exc), kind=predictor.kind)


def _small(data: bytes) -> bool:
    """Whether an image is small enough to decode on the event loop, by its size and
    its header's width and height (Pillow reads no pixels for those; 0.01 ms)."""
    if len(data) > INLINE_BYTES:
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width * img.height <= INLINE_PIXELS
    except Exception:  # not an image, a pixel bomb: the reader, in a thread, says which
        return False


async def _files(request: Request, options: ServeOptions, most: int) -> list[tuple[str, bytes]]:
    """The images a request carries as (name, bytes): its raw body, or its file parts."""
    if _is_multipart(request):
        try:
            form = await MultiPartParser(request.headers, _capped(request, options.max_bytes),
                                         max_files=most, max_fields=most).parse()
        except MultiPartException as exc:
            raise Refused(400, f"the multipart body cannot be read: {exc}") from None
        files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
                 if not isinstance(value, str)]
        if not files:
            raise Refused(400, "the multipart body holds no file part; send the image as a "
                          "file (curl -F image=@shot.png)")
        if len(files) > most:
            raise Refused(400, f"{len(files)} files in one request, at most {most}")
        return files
    if not _content_type(request).startswith(RAW_TYPES):
        raise Refused(415, "send the image as the body with Content-Type image/* or "
                      "application/octet-stream, or as a file in multipart/form-data. "
                      f"Received: {_content_type(request) or 'no content type'}")
    body = b"".join([chunk async for chunk in _capped(request, options.max_bytes)])
    if not body:
        raise Refused(400, "the request body is empty; send the image's bytes")
    return [("request body", body)]


async def _capped(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is {int(declared):,} bytes, over the limit of {limit:,} "
                      "(cnnzoo serve --max-bytes)")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over the limit of {limit:,} bytes (cnnzoo serve "
                          "--max-bytes)")
        yield chunk


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").lower()


def _is_multipart(request: Request) -> bool:
    return _content_type(request).startswith("multipart/form-data")


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
