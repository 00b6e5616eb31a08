"""Running the app under uvicorn: one process, or `workers` processes on one socket.

The network is loaded here first, so that a wrong SOURCE is one message and exit code
2 before any socket opens, and an ONNX file is exported once rather than by every
worker at the same time. SIGTERM makes uvicorn stop accepting connections, answer
the requests in flight, then stop: a drained server exits 0 (Ctrl-C drains too, and
ends as an interrupted command, 130).
"""

from __future__ import annotations

import gc
import json
import os
import signal
from dataclasses import asdict

from cnnzoo.errors import CnnzooError
from cnnzoo.serve.app import ServeOptions, create_app, load_predictor

OPTIONS_VARIABLE = "CNNZOO_SERVE_OPTIONS"  # how worker processes learn the options
GRACE_SECONDS = 30  # the longest a drain waits for requests in flight


def app_from_environment():  # -> Starlette; the factory uvicorn's worker processes call
    """The app for the options the parent process put in the environment."""
    options = ServeOptions(**json.loads(os.environ[OPTIONS_VARIABLE]))
    use_threads(options.threads)
    predictor = load_predictor(options)
    settle()
    return create_app(options, predictor)


def use_threads(threads: int | None) -> None:
    """Set the network's threads in this process (onnxruntime takes torch's number)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def settle() -> None:
    """Once the network is loaded, before serving: what the process holds by then (torch
    and the network, about 190,000 objects that live as long as it does) is left out of
    the garbage collector's passes. A full pass over them takes about 90 ms (lenet5's
    server on the 2-core AMD EPYC), a stall of every request in flight; frozen, a few
    microseconds."""
    gc.collect()
    gc.freeze()


def serve(options: ServeOptions, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1) -> None:
    """Serve until SIGTERM or Ctrl-C, then drain and return."""
    import uvicorn

    if workers < 1:
        raise CnnzooError(f"--workers must be at least 1. Received: {workers}")
    use_threads(options.threads)
    predictor = load_predictor(options)
    settings = {"host": host, "port": port, "log_level": "info", "access_log": False,
                "timeout_graceful_shutdown": GRACE_SECONDS}
    print(f"serving {predictor.run.config.name} ({options.backend}, {predictor.runs_as}) on "
          f"http://{host}:{port} "
          f"with {workers} worker{'s' if workers > 1 else ''}: POST /predict, "
          "/predict/batch; GET /health, /labels, /metadata", flush=True)
    # uvicorn raises the signal again once it has drained; a handler that does nothing
    # lets the process end with 0 rather than die of the default SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        if workers == 1:
            settle()
            uvicorn.run(create_app(options, predictor), **settings)
        else:
            del predictor  # each worker loads its own
            os.environ[OPTIONS_VARIABLE] = json.dumps(asdict(options))
            uvicorn.run("cnnzoo.serve.server:app_from_environment", factory=True,
                        workers=workers, **settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
