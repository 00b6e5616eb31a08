"""The lab's app (the page, its scripts and the API behind the guard) and the server
that runs it until Ctrl-C."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnzoo.errors import CnnzooError
from cnnzoo.lab.api import ROUTES, error_body
from cnnzoo.lab.runs import RunManager
from cnnzoo.lab.safety import Guard, GuardMiddleware, is_loopback

STATIC = Path(__file__).parent / "static"
PREDICTORS = 4  # trained networks kept loaded for predict, the most recently used


class Lab:
    """What the app's requests share: the runs, and the networks loaded for predict."""

    def __init__(self, runs: RunManager) -> None:
        self.runs = runs
        self._predictors: dict[tuple[str, str, int], Any] = {}
        self._loading = threading.Lock()

    def predictor(self, run: str | None, pretrained: str | None) -> Any:
        """A run's (or a bundled config's pretrained) network, loaded once and reloaded
        when its weights change."""
        from cnnzoo.runs import rundir
        from cnnzoo.tools.predict.predictor import Predictor

        if run is not None:
            path = self.runs.run_dir(run)
            if not (path.is_dir() and rundir.holds_run(path)):
                from cnnzoo.lab.runs import RunNotFound

                raise RunNotFound(f"no run named {run!r} under {self.runs.root}")
            weights = path / rundir.WEIGHTS
            key = ("run", str(path), weights.stat().st_mtime_ns if weights.exists() else 0)
            make = lambda: Predictor(path, top=1)  # noqa: E731
        else:
            assert pretrained is not None
            from cnnzoo.config.bundled import bundled_configs

            if pretrained not in bundled_configs():
                from cnnzoo.lab.runs import RunNotFound

                raise RunNotFound(f"no bundled config named {pretrained[:80]!r}")
            key = ("pretrained", pretrained, 0)
            make = lambda: Predictor(pretrained, pretrained=True, top=1)  # noqa: E731
        with self._loading:
            if key not in self._predictors:
                while len(self._predictors) >= PREDICTORS:
                    self._predictors.pop(next(iter(self._predictors)))
                self._predictors[key] = make()
            predictor = self._predictors.pop(key)
            self._predictors[key] = predictor  # most recently used last
            return predictor


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def json_error(request: Request, exc: Exception) -> Response:
    status, body = error_body(exc)
    return JSONResponse(body, status_code=status)


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug in cnnzoo: one JSON line, never a traceback page."""
    return JSONResponse({"error": {"message": f"internal error: {type(exc).__name__}: "
                                              f"{str(exc)[:300]}"}}, status_code=500)


def create_app(runs_root: Path, guard: Guard) -> Starlette:
    """The lab for the runs under `runs_root`, behind `guard`."""
    from cnnzoo.lab.api import Refused

    app = Starlette(
        routes=[Route("/", page), *ROUTES, Mount("/static", StaticFiles(directory=STATIC))],
        exception_handlers={CnnzooError: json_error, Refused: json_error,
                            404: json_error, 405: json_error, Exception: internal_error},
    )
    app.state.runs = RunManager(runs_root)
    app.state.lab = Lab(app.state.runs)
    app.add_middleware(GuardMiddleware, guard=guard)
    return app


def check_bind(host: str, token: str | None) -> None:
    """Listening beyond this machine needs a token."""
    if not is_loopback(host) and not token:
        raise CnnzooError(f"--host {host} listens beyond this machine; it needs a token "
                          "(give --token, or leave it out for one to be generated)")


def serve(app: Starlette, host: str, port: int, on_ready: Any = None) -> None:
    """Run `app` with uvicorn until Ctrl-C; `on_ready()` is called once it listens.
    Trainings the lab started are stopped at the end, each with its checkpoint."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    if on_ready is not None:
        startup = server.startup

        async def started(sockets: Any = None) -> None:
            await startup(sockets)
            if server.started:
                on_ready()

        server.startup = started  # type: ignore[method-assign]
    handle_exit = server.handle_exit

    def closing(sig: int, frame: Any) -> None:
        app.state.runs.closing.set()  # the event streams end, so shutting down waits for none
        handle_exit(sig, frame)

    server.handle_exit = closing  # type: ignore[method-assign]
    check_port(host, port)
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn raises Ctrl-C again once it has shut down: the lab's normal end
    except SystemExit:  # uvicorn's answer to a port taken between the check and now
        raise CnnzooError(f"cannot listen on {host}:{port}; choose another --port") from None
    finally:
        app.state.runs.close()


def check_port(host: str, port: int) -> None:
    """Refuse, with one line, an address that cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CnnzooError(f"cannot listen on {host}:{port}: {exc.strerror}; choose "
                              "another --port (or --host)") from None
