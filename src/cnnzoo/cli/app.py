"""The `cnnzoo` command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer

from cnnzoo.cli import lab, language, serve, tools, train, tune, zoo
from cnnzoo.cli.options import USER_ERROR, app
from cnnzoo.errors import CnnzooError, Stopped
from cnnzoo.utils.startup import INTERRUPTED, quiet_interrupt

# The commands in the order --help lists them: the language, training, the tools on a
# finished run, the zoo, the search, the export. One list; each module holds its commands.
COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("summary", language.summary),
    ("config", language.config_),
    ("layers", language.layers),
    ("schema", language.schema),
    ("train", train.train),
    ("eval", tools.eval_),
    ("predict", tools.predict),
    ("filter", tools.filter_),
    ("zoo", zoo.zoo),
    ("compare", tools.compare),
    ("viz", tools.viz),
    ("tune", tune.tune),
    ("export", tools.export),
    ("lab", lab.lab),
    ("serve", serve.serve),
]
for _name, _command_function in COMMANDS:
    app.command(name=_name)(_command_function)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; user errors print one line."""
    from cnnzoo.training.stopping import Interrupted, worker_rank

    try:
        code = app(args=argv, prog_name="cnnzoo", standalone_mode=False)
    except CnnzooError as exc:
        rank = worker_rank()
        print(f"{'' if not rank else f'[rank {rank}] '}error: {exc}", file=sys.stderr)
        return USER_ERROR
    except (Interrupted, Stopped) as exc:
        if not worker_rank():  # every process stopped at the same step; one says so
            print(str(exc), file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        # The parser's errors (an unknown option, a wrong choice, a missing argument) are
        # click's exceptions, which Typer bundles privately: known by their interface.
        if not (hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `cnnzoo` alone: the help, as is
            exc.show()
            return USER_ERROR
        print(f"error: {exc.format_message()} (see cnnzoo {' '.join(_command(argv))}--help)",
              file=sys.stderr)
        return USER_ERROR
    if code == INTERRUPTED:  # Typer's answer to a KeyboardInterrupt inside a command
        print("interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0  # --help and typer.Exit give a code


def _command(argv: list[str] | None) -> list[str]:
    """The command named in `argv`, with a space after it, for pointing to its --help."""
    words = sys.argv[1:] if argv is None else argv
    name = next((w for w in words if not w.startswith("-")), None)
    known = name is not None and name in typer.main.get_command(app).commands
    return [f"{name} "] if known else []


def main() -> None:
    """The `cnnzoo` console script."""
    with quiet_interrupt():  # also while `run` imports the training code
        code = run()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # as training.stopping.worker_rank
        # One of torchrun's processes: its work is done and its files are written (the
        # process group was left together). Tearing down torch's C++ state at interpreter
        # exit can still abort such a process ("terminate called without an active
        # exception", SIGABRT), which torchrun reports as a failed run; leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
