"""Where the server decodes an image: a thumbnail on the event loop (the hop to a thread
costs more than decoding it), anything larger or unreadable in a thread; the pixels
and errors are the reader's either way."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from cnnzoo.errors import DataError
from cnnzoo.layers.shapes import Volume
from cnnzoo.serve import app
from cnnzoo.tools.predict.predictor import NamedBytes, Prediction, decode
from tests.helpers.datafiles import pixel_bomb_png


class Reader:
    """The little of a Predictor that `_decode` uses."""

    volume = Volume(28, 28, 1)
    kind = "probability"


def png(width: int, height: int, mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
    return buffer.getvalue()


CASES = {  # name: (body, decoded in a thread?)
    "28 x 28 grey": (png(28, 28), False),
    "64 x 64 colour": (png(64, 64, "RGB"), False),
    "65 x 64": (png(65, 64), True),
    "a large photograph": (png(640, 480, "RGB"), True),
    "a thumbnail padded past the byte cap": (png(28, 28) + bytes(app.INLINE_BYTES), True),
    "not an image": (b"hello, world", True),
    "a decompression bomb": (pixel_bomb_png(100_000, 100_000), True),
}


@pytest.mark.parametrize("name", CASES)
def test_thumbnails_decode_on_the_loop_and_the_rest_in_a_thread(name, monkeypatch):
    body, threaded = CASES[name]
    hops = []

    async def recording_threadpool(function, *args):
        hops.append(function)
        return function(*args)

    monkeypatch.setattr(app, "run_in_threadpool", recording_threadpool)
    answer = asyncio.run(app._decode(name, body, Reader()))
    assert bool(hops) == threaded
    try:
        expected = decode(NamedBytes(body, name), Reader.volume)
    except DataError as exc:  # the reader's own message, as `cnnzoo predict` gives it
        assert isinstance(answer, Prediction) and answer.error == str(exc)
    else:
        assert answer[0] == name and np.array_equal(answer[1], expected)
