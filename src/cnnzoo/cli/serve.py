"""`cnnzoo serve`: a trained network behind HTTP; and the --backend choice that
`predict` shares with it."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from cnnzoo.cli.options import DeviceOption, PretrainedFlag, RunSource, check_device
from cnnzoo.serve.options import DEFAULT_NETWORK


class Backend(str, Enum):  # written out, not imported: --help must not import torch
    torch = "torch"
    onnxruntime = "onnxruntime"


class NetworkPlace(str, Enum):  # serve/options.py's NETWORK_PLACES, without importing it
    process = "process"
    thread = "thread"


DEFAULT_PLACE = NetworkPlace(DEFAULT_NETWORK)

BackendOption = Annotated[
    Backend, typer.Option("--backend", help="torch, or onnxruntime (the network exported to "
                          "ONNX on first use, cached, and checked against torch)")
]


def serve(
    source: RunSource,
    pretrained: PretrainedFlag = False,
    host: Annotated[str, typer.Option("--host", help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="the TCP port")] = 8000,
    backend: BackendOption = Backend.torch,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="images per forward pass at most")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="the longest an idle network waits for "
                            "requests still being read to share its forward pass (a busy one "
                            "takes what queued while it ran)")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="images waiting at most; more are "
                          "answered 503 with Retry-After")
    ] = 256,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", min=1, help="the largest request body, in bytes")
    ] = 16 << 20,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="server processes on the one port, each "
                          "with its own copy of the network")
    ] = 1,
    top: Annotated[int, typer.Option("--top", "-t", min=1, help="classes per answer")] = 3,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="threads each worker's network uses "
                                 "(default: torch's, one per core); workers x threads should "
                                 "not exceed the cores")
    ] = None,
    device: DeviceOption = "auto",
    network: Annotated[
        NetworkPlace, typer.Option("--network", help="where the forward pass runs: a process "
                                   "of its own beside each worker (no GIL shared with the "
                                   "HTTP event loop; POSIX systems), or a thread of the "
                                   "worker's (the default on Windows)")
    ] = DEFAULT_PLACE,
) -> None:
    """Serve a trained network over HTTP with dynamic batching: POST /predict (one
    image), POST /predict/batch (multipart files); GET /health, /labels, /metadata.
    SIGTERM answers the requests in flight, then exits 0."""
    from cnnzoo.errors import CnnzooError

    check_device(device)
    try:
        from cnnzoo.serve.options import ServeOptions
        from cnnzoo.serve.server import serve as run_server
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in ("starlette", "uvicorn", "multipart", "python_multipart"):
            raise
        raise CnnzooError(f"cnnzoo serve needs {missing}: pip install 'cnnzoo[lab]'") from None
    options = ServeOptions(source=source, pretrained=pretrained, backend=backend.value,
                           device=device, top=top, max_batch=max_batch, max_wait_ms=max_wait_ms,
                           max_queue=max_queue, max_bytes=max_bytes, threads=threads,
                           network=network.value)
    run_server(options, host, port, workers)
