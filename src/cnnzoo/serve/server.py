"""Running the app under uvicorn: one process, or `workers` processes on one socket.

The network is loaded here first, so that a wrong SOURCE is one message and exit code
2 before any socket opens, and an ONNX file is exported once rather than by every
worker at the same time. SIGTERM makes uvicorn stop accepting connections, answer
the requests in flight, then stop: a drained server exits 0 (Ctrl-C drains too, and
ends as an interrupted command, 130).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from cnnzoo.errors import CnnzooError
from cnnzoo.serve.app import create_app
from cnnzoo.serve.network import NetworkProcess, load_predictor, settle, use_threads
from cnnzoo.serve.options import ServeOptions
from cnnzoo.tools.predict.predictor import Predictor

OPTIONS_VARIABLE = "CNNZOO_SERVE_OPTIONS"  # how worker processes learn the options
FAILURE_VARIABLE = "CNNZOO_SERVE_FAILURES"  # a file where a worker that cannot start says why
GRACE_SECONDS = 30  # the longest a drain waits for requests in flight
WORKER_CANNOT_START = 3  # uvicorn's STARTUP_FAILURE: its supervisor then stops them all


def app_from_environment():  # -> Starlette; the factory uvicorn's worker processes call
    """The app for the options the parent process put in the environment."""
    options = ServeOptions(**json.loads(os.environ[OPTIONS_VARIABLE]))
    use_threads(options.threads)
    try:
        predictor, network = load(options)
    except CnnzooError as exc:  # exit 3: uvicorn stops every worker, not start this again
        with open(os.environ[FAILURE_VARIABLE], "a") as failures:
            failures.write(f"{exc}\n")
        sys.exit(WORKER_CANNOT_START)
    settle()
    return create_app(options, predictor, network)


def load(options: ServeOptions, start: bool = True) -> tuple[Predictor, NetworkProcess | None]:
    """The network, loaded; with `--network process` (and `start`) its process started
    too, so that one that cannot start is a message and exit code 2 before the socket
    opens."""
    predictor = load_predictor(options)
    if options.network != "process" or not start:
        return predictor, None
    network = NetworkProcess(options, predictor)
    network.start()
    return predictor, network


def serve(options: ServeOptions, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1) -> None:
    """Serve until SIGTERM or Ctrl-C, then drain and return."""
    import uvicorn

    if workers < 1:
        raise CnnzooError(f"--workers must be at least 1. Received: {workers}")
    use_threads(options.threads)
    predictor, network = load(options, start=workers == 1)  # workers start their own
    settings = {"host": host, "port": port, "log_level": "info", "access_log": False,
                "timeout_graceful_shutdown": GRACE_SECONDS}
    place = "in a thread" if options.network == "thread" else "in a process of its own"
    how = ", ".join(dict.fromkeys([options.backend, predictor.runs_as, place]))
    print(f"serving {predictor.run.config.name} ({how}) on http://{host}:{port} "
          f"with {workers} worker{'s' if workers > 1 else ''}: POST /predict, "
          "/predict/batch; GET /health, /labels, /metadata", flush=True)
    # uvicorn raises the signal again once it has drained; a handler that does nothing
    # lets the process end with 0 rather than die of the default SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        if workers == 1:
            settle()
            uvicorn.run(create_app(options, predictor, network), **settings)
        else:
            del predictor  # each worker loads its own
            run_workers(options, workers, settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if network is not None:  # stopped already once drained; not if uvicorn never ran
            network.stop()


def run_workers(options: ServeOptions, workers: int, settings: dict) -> None:
    """uvicorn's worker processes, each loading the network with `app_from_environment`;
    CnnzooError with its message when one could not (uvicorn then stops them all)."""
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="cnnzoo-serve-") as folder:
        failures = Path(folder) / "failures"
        failures.touch()
        os.environ[OPTIONS_VARIABLE] = json.dumps(asdict(options))
        os.environ[FAILURE_VARIABLE] = str(failures)
        uvicorn.run("cnnzoo.serve.server:app_from_environment", factory=True,
                    workers=workers, **settings)
        said = failures.read_text().strip()
    if said:
        raise CnnzooError(f"a worker could not start: {said.splitlines()[0]}")
