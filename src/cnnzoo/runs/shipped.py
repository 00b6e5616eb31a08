"""Which bundled configs ship trained weights, and their records: the `pretrained`
entry of a config's measurement in `configs/results.json` (file, sha256, bytes, ...).
"""

from __future__ import annotations

from typing import Any

from cnnzoo.config.bundled import read_measured


def bundled_record(name: str) -> dict[str, Any] | None:
    """The `pretrained` record of a bundled config, or None when it has no weights."""
    record = read_measured().get(name) or {}
    return record.get("pretrained")


def bundled_with_weights() -> list[str]:
    """The bundled configs whose trained weights ship with cnnzoo, sorted."""
    return sorted(n for n, r in read_measured().items() if r.get("pretrained"))
