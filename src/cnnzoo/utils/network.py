"""Waiting on the network: how long before a silent server is given up, and SIGTERM
during a download turned into a clean stop, so that a download's cleanup runs and no
partial file stays behind. Used by the weights cache and the dataset downloads."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator

from cnnzoo.errors import CnnzooError, Stopped

TIMEOUT_ENV = "CNNZOO_DOWNLOAD_TIMEOUT"
# Seconds to wait for a connection, and then for each block: long enough for a slow
# server, short enough that a silent one is noticed.
DEFAULT_TIMEOUT = 30.0


def download_timeout() -> float:
    """Seconds to wait for the connection and then for each block of a download:
    $CNNZOO_DOWNLOAD_TIMEOUT, else DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise CnnzooError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds above 0; set it "
                          f"to, say, 120, or unset it for {DEFAULT_TIMEOUT:g}")
    return seconds


def timed_out(timeout: float) -> str:
    """The end of a message for a server that did not answer in time."""
    return (f"no answer within {timeout:g} s; check the address and the network, or wait "
            f"longer with {TIMEOUT_ENV}=SECONDS")


@contextlib.contextmanager
def default_socket_timeout(seconds: float) -> Iterator[None]:
    """Sockets made inside the block without a timeout of their own get `seconds`:
    for downloaders (torchvision's) that open connections with no timeout at all."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


@contextlib.contextmanager
def sigterm_stops(message: str) -> Iterator[None]:
    """Within the block, SIGTERM raises `Stopped(message)`, so that the `finally` blocks
    inside it run: SIGTERM's default action ends the process at once and would leave
    partial files. A handler the program set itself is left in place, as is any outside
    the main thread (where Python runs signal handlers)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum, message)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
