"""The download cache for weights named by URL: only https (plain http from this machine
only), always with the file's SHA-256 in the URL, fetched once and reused. A server
that does not answer is given up after $CNNZOO_DOWNLOAD_TIMEOUT seconds (30 by
default), and a download that does not finish leaves nothing in the cache.

`cache_dir` is also where `runs.pretrained.unpack` keeps the run directories it unpacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from cnnzoo.errors import CheckpointError, CnnzooError
from cnnzoo.utils.files import check_writable
from cnnzoo.utils.network import download_timeout, sigterm_stops, timed_out

# Hosts a plain http:// URL may name: a server on this machine, as in the tests.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CACHE_ENV = "CNNZOO_CACHE"
BLOCK = 1 << 16


def cache_dir() -> Path:
    """Where downloads and unpacked runs go: $CNNZOO_CACHE, else torch.hub's cache
    folder's sibling `cnnzoo` (~/.cache/cnnzoo by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import torch.hub

    return Path(torch.hub.get_dir()).parent / "cnnzoo"


def split_url(url: str) -> tuple[str, str]:
    """(the URL without its fragment, the hex SHA-256 of its `#sha256=` fragment)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise CnnzooError(f"cannot fetch weights from {url}: only https:// URLs are supported")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        raise CnnzooError(
            f"refusing http:// for {parts.hostname}: weights are fetched over https:// "
            "(plain http only from this machine, 127.0.0.1 or localhost)"
        )
    fragment = parts.fragment
    hexdigest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""
    if len(hexdigest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hexdigest):
        raise CnnzooError(
            f"the URL {url} has no SHA-256: append '#sha256=' and the 64 hex digits of the "
            "file's SHA-256 (sha256sum FILE), so that a changed or damaged file is refused"
        )
    return url.split("#", 1)[0], hexdigest.lower()


def download(url: str) -> tuple[Path, str]:
    """Fetch `url` into the cache once; later calls reuse the file. Returns (path, sha256).

    The bytes go to a `.partial` file beside the target, hashed as they come, and it
    takes the target's name only when the hash is the URL's. Every other way out (an
    error, a timeout, Ctrl-C, SIGTERM) removes it, so the cache never holds a file that
    was not checked."""
    bare, expected = split_url(url)
    name = Path(urlsplit(bare).path).name or "weights.safetensors"
    target = cache_dir() / "downloads" / f"{expected[:16]}-{name}"
    if target.exists():
        return target, expected  # open_packed checks the whole hash again
    timeout = download_timeout()
    check_writable(target.parent, CACHE_ENV, folder=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial",
                                   dir=target.parent)
    try:
        stopped = f"SIGTERM: the download of {bare} stopped; nothing was kept in the cache"
        with os.fdopen(fd, "wb") as handle, sigterm_stops(stopped):
            actual = _fetch(bare, handle, timeout)
        if actual != expected:
            raise CheckpointError(f"corrupt download from {bare}: its SHA-256 is {actual}, the "
                                  f"URL says {expected}; nothing was kept")
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return target, expected


def _fetch(url: str, handle: BinaryIO, timeout: float) -> str:
    """Write the body of `url` to `handle`; returns its SHA-256."""
    import http.client
    import urllib.error
    import urllib.request

    from cnnzoo.version import __version__

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": f"cnnzoo/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for block in iter(lambda: response.read(BLOCK), b""):
                digest.update(block)
                handle.write(block)
    except urllib.error.HTTPError as exc:
        raise CnnzooError(f"cannot download {url}: the server answered {exc.code} "
                          f"{exc.reason}") from None
    except (TimeoutError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise CnnzooError(f"cannot download {url}: {timed_out(timeout)}") from None
        raise CnnzooError(f"cannot download {url}: {_strerror(reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise CnnzooError(f"cannot download {url}: {_strerror(exc)}") from None
    return digest.hexdigest()


def _strerror(exc: object) -> str:
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
