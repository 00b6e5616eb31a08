"""Reading the IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST, EMNIST).

Read straight from the `.gz` (or uncompressed) files where they are, e.g. the
read-only copy a distribution package installs, without unpacking anywhere.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cnnzoo.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (magic 0x0000TTNN: type TT, NN dimensions)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is damaged or truncated; "
                        "delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(
            f"{path} is not an IDX file (magic bytes {data[:4].hex() or 'missing'}); "
            "expected an MNIST-format images or labels file"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: IDX header is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    count = math.prod(shape)  # exact: np.prod wraps around on a damaged header's sizes
    expected = count * dtype.itemsize
    if len(data) - header < expected:
        raise DataError(
            f"{path} is truncated: the header promises {shape} ({expected:,} bytes of data) "
            f"but the file holds {len(data) - header:,}; delete it and fetch it again"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file, gzipped if the name ends in .gz (for tests)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=1)
    path.write_bytes(payload)
