"""The download cache for weights named by URL: only https (plain http from this machine
only), always with the file's SHA-256 in the URL, fetched once and reused.

`cache_dir` is also where `runs.pretrained.unpack` keeps the run directories it unpacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from cnnzoo.errors import CheckpointError, CnnzooError

# Hosts a plain http:// URL may name: a server on this machine, as in the tests.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def cache_dir() -> Path:
    """Where downloads and unpacked runs go: $CNNZOO_CACHE, else torch.hub's cache
    folder's sibling `cnnzoo` (~/.cache/cnnzoo by default)."""
    if os.environ.get("CNNZOO_CACHE"):
        return Path(os.environ["CNNZOO_CACHE"])
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
    """Fetch `url` into the cache once (torch.hub's downloader, which checks the hash
    before the file gets its name); later calls reuse the file. Returns (path, sha256)."""
    import torch.hub

    bare, expected = split_url(url)
    name = Path(urlsplit(bare).path).name or "weights.safetensors"
    target = cache_dir() / "downloads" / f"{expected[:16]}-{name}"
    if target.exists():
        return target, expected  # open_packed checks the whole hash again
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(bare, str(target), hash_prefix=expected, progress=False)
    except RuntimeError as exc:
        raise CheckpointError(f"corrupt download from {bare}: {exc}; nothing was kept") from None
    except OSError as exc:
        raise CnnzooError(f"cannot download {bare}: {exc}") from None
    return target, expected
