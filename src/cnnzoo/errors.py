"""User-facing errors.

Everything a user can get wrong (a config, a data folder, a checkpoint, a command
line) raises a subclass of `CnnzooError`. The CLI turns these into one message and
exit code 2; anything else is a bug in cnnzoo and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnzooError(Exception):
    """A problem with the user's input, explained in one message."""


class ConfigError(CnnzooError, ValueError):
    """A config that cannot be built.

    `where` names the place in the experiment file (`model.layers[3] (pool)`),
    `path` is the key path used to find the line, `fix` says what to do.
    `source` and `line` are filled in by the loader, which knows the file.
    """

    def __init__(
        self,
        what: str,
        *,
        where: str | None = None,
        path: tuple[str | int, ...] = (),
        fix: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.what = what
        self.where = where
        self.path = path
        self.fix = fix
        self.source = source
        self.line = line
        super().__init__(self.message)

    @property
    def message(self) -> str:
        place = " ".join(
            part
            for part in (self.where, f"at line {self.line}" if self.line is not None else None)
            if part
        )
        text = ": ".join(part for part in (self.source, place, self.what) if part)
        if self.fix:
            text += f"; {self.fix}"
        return text

    def __str__(self) -> str:
        return self.message

    def located(self, source: str | None, lines: dict[tuple, int] | None) -> ConfigError:
        """Fill in the file and the line of the nearest key on `path` that has one."""
        if self.source is None:
            self.source = source
        if self.line is None and lines:
            path = self.path
            while path:
                line = next((lines[p] for p in _written_forms(path) if p in lines), None)
                if line is not None:
                    self.line = line
                    break
                path = path[:-1]
        self.args = (self.message,)
        return self


def _written_forms(path: tuple) -> list[tuple]:
    """`path` as it may appear in the file: nested layers can be written in the long
    form (`- residual: {layers: [...]}`) or the short one (`- residual: [...]`), which
    has no `layers` key."""
    forms = [()]
    for i, part in enumerate(path):
        optional = part == "layers" and i > 0 and isinstance(path[i - 1], str) and i > 1
        forms = [(*f, part) for f in forms] + (forms if optional else [])
    return forms


class DataError(CnnzooError):
    """A dataset that cannot be found, read or used."""


class CheckpointError(CnnzooError):
    """A run directory or checkpoint that cannot be read or does not fit."""


class Stopped(BaseException):
    """A command stopped by a signal after cleaning up after itself (a download that
    removed its partial file). The CLI prints the message and exits 128 + the signal's
    number, as a shell reports a process the signal ended. Like KeyboardInterrupt, it
    is no Exception, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int, message: str) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
