"""`cnnzoo lab`: the web page that edits, plans, trains and compares networks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnzoo.errors import CnnzooError


def lab(
    runs: Annotated[Path, typer.Option("--runs", help="the folder of runs the lab lists "
                                       "and trains into")] = Path("runs"),
    host: Annotated[str, typer.Option("--host", help="the address to listen on; any but "
                                      "127.0.0.1 (or localhost) needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="the port to listen on")] = 8765,
    token: Annotated[str | None, typer.Option("--token", help="the token every request "
                                              "must carry (default: none on 127.0.0.1, "
                                              "a generated one on any other address)")] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="print the URL; do not "
                                             "open a browser")] = False,
) -> None:
    """Edit a network in the browser: its volumes as you type, train it, watch it learn,
    compare runs, try an image. Ctrl-C ends it."""
    try:
        from cnnzoo.lab.safety import Guard, is_loopback, new_token
        from cnnzoo.lab.server import check_bind, create_app, serve
    except ImportError as exc:
        raise CnnzooError(f"cnnzoo lab needs the lab extra ({exc.name} is missing): "
                          "pip install 'cnnzoo[lab]'") from None

    if runs.exists() and not runs.is_dir():
        raise CnnzooError(f"--runs {runs} is a file; give the folder of runs")
    if token is None and not is_loopback(host):
        token = new_token()
    check_bind(host, token)
    address = f"[{host}]" if ":" in host else host
    url = f"http://{address}:{port}/" + (f"?token={token}" if token else "")

    def ready() -> None:
        print(f"cnnzoo lab: {url}  (runs in {runs}; Ctrl-C ends it)", flush=True)
        if not no_browser:
            import webbrowser

            webbrowser.open(url)

    serve(create_app(runs, Guard(host, port, token)), host, port, on_ready=ready)
