"""What `cnnzoo serve` was asked for, in one record that travels to every process of
the server (uvicorn's workers and the network's own) as JSON."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cnnzoo.errors import CnnzooError

NETWORK_PLACES = ("process", "thread")
# A process of its own takes a socket pair passed to a child, which needs POSIX.
DEFAULT_NETWORK = "process" if os.name == "posix" else "thread"


@dataclass(frozen=True)
class ServeOptions:
    """The server's settings; the CLI's options, one field each."""

    source: str  # a run directory, or with `pretrained` a config name, file or URL
    pretrained: bool = False
    backend: str = "torch"  # torch or onnxruntime
    device: str = "auto"
    top: int = 3  # classes per answer
    max_batch: int = 64  # images per forward pass at most
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for others
    max_queue: int = 256  # images waiting at most; more are refused with 503
    max_bytes: int = 16 << 20  # the largest request body accepted
    max_files: int = 256  # files in one /predict/batch request at most
    threads: int | None = None  # torch's and onnxruntime's threads per worker; None: torch's
    network: str = DEFAULT_NETWORK  # where the forward pass runs: its own process, or a thread

    def __post_init__(self) -> None:
        if self.network not in NETWORK_PLACES:
            raise CnnzooError(f"the network runs in a {' or a '.join(NETWORK_PLACES)}. "
                              f"Received: network={self.network!r}")
