"""The lab's HTTP API: JSON in and out, the page's one way to cnnzoo.

    POST /api/plan                    YAML text -> `cnnzoo summary --json`'s document
    GET  /api/configs[/{name}]        the bundled configs; one config's YAML text
    GET  /api/schema                  the experiment file's JSON Schema (completion)
    POST /api/runs                    {"yaml", "name"?, "set"?} -> 201 {"run"}; training starts
    GET  /api/runs[/{run}]            every run with its status; one run in full
    GET  /api/runs/{run}/events       Server-Sent Events (events.py)
    POST /api/runs/{run}/stop|resume
    GET  /api/runs/{run}/files/{png}  a picture the run made
    POST /api/runs/{run}/activations  multipart `image` -> the activation volumes as PNG
    POST /api/predict                 multipart `image`, `run` or `pretrained`, `top`?

Errors are {"error": {"message", "line"?}}: 422 for a config (with the CLI's line)
or an unreadable image, 404 for a missing run or config, 409 for a run that is live
or cannot do what was asked (no weights yet, a damaged file), 413 for a body over its
cap, 400 for the rest.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cnnzoo.config.experiment import ExperimentConfig, config_from_document
from cnnzoo.config.yamlio import MAX_BYTES, load_yaml
from cnnzoo.errors import CheckpointError, CnnzooError, ConfigError, DataError
from cnnzoo.lab.events import run_events
from cnnzoo.lab.runs import RunConflict, RunManager, RunNotFound
from cnnzoo.runs.lock import RunBusy

MAX_IMAGE_BYTES = 16 << 20  # an upload over 16 MiB is no image a small network reads
# A config over MAX_BYTES gets the CLI's message from the reader; a body far over it is
# refused before it is read.
MAX_PLAN_BODY = 2 * MAX_BYTES
MAX_RUN_BODY = 8 * MAX_BYTES  # the YAML inside JSON, each byte escaped at worst
MAX_TOP = 100
STATUS_OF = ((ConfigError, 422), (DataError, 422), (RunNotFound, 404), (RunBusy, 409),
             (RunConflict, 409), (CheckpointError, 409))


class Refused(Exception):
    """A request the API answers with `status` and one message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for an error a request ran into."""
    if isinstance(exc, Refused):
        return exc.status, {"error": {"message": str(exc)}}
    if isinstance(exc, HTTPException):
        return exc.status_code, {"error": {"message": str(exc.detail)}}
    status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
    error: dict[str, Any] = {"message": str(exc)}
    if isinstance(exc, ConfigError):
        error["line"] = exc.line
    return status, {"error": error}


async def capped_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is {int(declared):,} bytes, over the limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source="editor") from None


def parse_experiment(text: str, name: str | None, overrides: list[str] = ()) -> ExperimentConfig:
    """The config the editor's text describes, read as `cnnzoo summary` reads a file:
    the same limits, messages and lines; `name` stands in for the file's stem."""
    if name is not None and not _plain_name(name):
        raise Refused(400, "name must be a config's name: letters, digits, '-', '_', '.'")
    return config_from_document(load_yaml(text, "editor"), name or "experiment", overrides)


def _plain_name(name: str) -> bool:
    return 0 < len(name) <= 100 and all(c.isalnum() or c in "-_." for c in name) and (
        not name.startswith("."))


def plan_document(text: str, name: str | None, lines: bool) -> dict[str, Any]:
    from cnnzoo.model.plan import plan_experiment
    from cnnzoo.model.summary import summary_dict

    config = parse_experiment(text, name)
    plan = plan_experiment(config)
    document = summary_dict(plan)
    if lines:
        document["lines"] = layer_lines(plan, config)
    return document


def layer_lines(plan: Any, config: ExperimentConfig) -> dict[str, int]:
    """The editor line of every layer in the plan, by its `path`, found the way a
    config error finds its line (the nearest key on the layer's path)."""
    found: dict[str, int] = {}
    stack = list(plan.layers)
    while stack:
        layer = stack.pop()
        stack.extend(layer.children)
        probe = ConfigError("", path=tuple(layer.where.path)).located(
            None, config.origin.lines if config.origin else None)
        if probe.line is not None:
            found[layer.index] = probe.line
    return found


async def plan(request: Request) -> Response:
    text = decode_text(await capped_body(request, MAX_PLAN_BODY))
    lines = request.query_params.get("lines") == "1"
    document = await run_in_threadpool(plan_document, text, request.query_params.get("name"),
                                       lines)
    return JSONResponse(document)


async def configs(request: Request) -> Response:
    from cnnzoo.config.bundled import RESULTS_FILE, bundled_configs, bundled_dir

    # Planning every bundled config takes a few hundred ms: once per version of the files.
    directory = bundled_dir()
    files = [*bundled_configs().values(), *([directory / RESULTS_FILE] if directory else [])]
    key = tuple((str(p), p.stat().st_mtime_ns) for p in files if p.exists())
    return JSONResponse(await run_in_threadpool(_config_rows, key))


@functools.lru_cache(maxsize=1)
def _config_rows(key: tuple) -> list[dict[str, Any]]:
    from cnnzoo.zoo.catalog import zoo_entries

    return [{"name": e.name, "dataset": e.dataset, "params": e.params, "macs": e.macs,
             "test_accuracy": e.accuracy, "pretrained": bool((e.measured or {}).get("pretrained"))}
            for e in zoo_entries()]


async def config_text(request: Request) -> Response:
    from cnnzoo.config.bundled import bundled_configs

    name = request.path_params["name"]
    path = bundled_configs().get(name)
    if path is None:
        raise RunNotFound(f"no bundled config named {name[:80]!r}; GET /api/configs lists them")
    return JSONResponse({"name": name, "yaml": path.read_text()})


async def schema(request: Request) -> Response:
    from cnnzoo.config.schema import experiment_schema

    return JSONResponse(experiment_schema())


def manager_of(request: Request) -> RunManager:
    return request.app.state.runs


async def start_run(request: Request) -> Response:
    body = await capped_body(request, MAX_RUN_BODY)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, 'the body must be JSON: {"yaml": TEXT, "name": optional}') from None
    if not isinstance(data, dict) or not isinstance(data.get("yaml"), str):
        raise Refused(400, 'the body must be JSON: {"yaml": TEXT, "name": optional}')
    name, overrides = data.get("name"), data.get("set", [])
    if not all(isinstance(data.get(key), (str, type(None))) for key in ("name", "config")):
        raise Refused(400, "name and config must be strings")
    if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        raise Refused(400, 'set must be a list of "key=value" strings')
    text = data["yaml"]

    def check_and_start() -> str:
        from cnnzoo.model.plan import plan_experiment

        config = parse_experiment(text, data.get("config"), overrides)
        plan_experiment(config)  # a shape error is the editor's to fix, before any process
        return manager_of(request).start(text, config, name, overrides)

    run = await run_in_threadpool(check_and_start)
    return JSONResponse({"run": run}, status_code=201)


async def list_runs(request: Request) -> Response:
    runs = manager_of(request)

    def rows() -> list[dict[str, Any]]:
        return [runs.summary(name) for name in runs.names()]

    return JSONResponse(await run_in_threadpool(rows))


async def run_detail(request: Request) -> Response:
    name = request.path_params["run"]
    return JSONResponse(await run_in_threadpool(manager_of(request).detail, name))


async def run_events_stream(request: Request) -> Response:
    runs, name = manager_of(request), request.path_params["run"]
    runs.status(name)  # a missing run is a 404 before the stream opens
    return StreamingResponse(run_events(runs, name), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def stop_run(request: Request) -> Response:
    name = request.path_params["run"]
    manager_of(request).stop(name)
    return JSONResponse({"run": name, "stopping": True}, status_code=202)


async def resume_run(request: Request) -> Response:
    name = request.path_params["run"]
    await run_in_threadpool(manager_of(request).resume, name)
    return JSONResponse({"run": name}, status_code=202)


async def run_file(request: Request) -> Response:
    """A picture in the run's folder: one plain .png name, no path, no link."""
    runs, name = manager_of(request), request.path_params["run"]
    file = request.path_params["file"]
    path = runs.run_dir(name) / file
    if ("/" in file or file.startswith(".") or not file.endswith(".png")
            or path.is_symlink() or not path.is_file()):
        raise RunNotFound(f"run {name!r} has no picture {file[:80]!r}")
    return Response(path.read_bytes(), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


async def upload(request: Request) -> tuple[bytes, str, dict[str, str]]:
    """The multipart form's `image` (its bytes and file name) and its other fields."""
    body = await capped_body(request, MAX_IMAGE_BYTES + 64 * 1024)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise Refused(400, "send the image as the multipart field 'image'")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return await image.read(), image.filename or "image", fields


async def predict(request: Request) -> Response:
    data, filename, fields = await upload(request)
    top_text = fields.get("top", "3")
    if not top_text.isdigit() or not 1 <= int(top_text) <= MAX_TOP:
        raise Refused(400, f"top must be a whole number from 1 to {MAX_TOP}. "
                           f"Received: top={top_text[:20]!r}")
    run, pretrained = fields.get("run"), fields.get("pretrained")
    if (run is None) == (pretrained is None):
        raise Refused(400, "give one of the fields 'run' (a run's name) or 'pretrained' "
                           "(a bundled config's name)")
    lab = request.app.state.lab

    def answer() -> list[dict[str, Any]]:
        predictor = lab.predictor(run, pretrained)
        found = predictor.predict([data], int(top_text))[0]
        if found.error is not None:
            raise DataError(found.error.replace("image 0", filename[:100]))
        return [{**found.as_dict(), "image": filename[:200]}]

    return JSONResponse(await run_in_threadpool(answer))


async def activations(request: Request) -> Response:
    """The run's activation volumes for an uploaded image, as `cnnzoo viz` draws them."""
    from cnnzoo.tools.viz import visualize_run

    path = manager_of(request).run_dir(request.path_params["run"])
    data, filename, _ = await upload(request)

    def draw() -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            image = Path(folder) / "image"
            image.write_bytes(data)
            out = Path(folder) / "activations.png"
            try:
                visualize_run(path, image, out)
            except CheckpointError as exc:
                raise RunConflict(str(exc)) from None
            except CnnzooError as exc:
                raise DataError(str(exc).replace(str(image), filename[:100])) from None
            return out.read_bytes()

    return Response(await run_in_threadpool(draw), media_type="image/png")


ROUTES = [
    Route("/api/plan", plan, methods=["POST"]),
    Route("/api/configs", configs),
    Route("/api/configs/{name}", config_text),
    Route("/api/schema", schema),
    Route("/api/runs", list_runs),
    Route("/api/runs", start_run, methods=["POST"]),
    Route("/api/runs/{run}", run_detail),
    Route("/api/runs/{run}/events", run_events_stream),
    Route("/api/runs/{run}/stop", stop_run, methods=["POST"]),
    Route("/api/runs/{run}/resume", resume_run, methods=["POST"]),
    Route("/api/runs/{run}/files/{file}", run_file),
    Route("/api/runs/{run}/activations", activations, methods=["POST"]),
    Route("/api/predict", predict, methods=["POST"]),
]
