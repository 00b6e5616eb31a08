"""Reading one image file, the same way for `predict`, `viz`, `filter` and folder
datasets.

Every mode Pillow opens is brought to values in [0, 1] before anything else:
8-bit modes divide by 255; 16-bit grey (`I;16*`, and `I`, which is how Pillow
opens 16-bit PNGs) by 65,535, clipped to that range; `F` (floating point) is taken
as already in [0, 1] and clipped. Palette images are expanded through their
palette. Transparency (RGBA, LA, PA, a palette's transparent entry) is composited
over `BACKGROUND`, black: a fully transparent pixel reads as 0, the value zero
padding and an empty Fashion-MNIST background have. A grey image stays one
channel, anything else is RGB; `read_image` then converts to the model's input
depth (RGB to grey with ITU-R 601-2 luma, as Pillow's `convert("L")`), resizes
bilinearly and rounds to the uint8 range training reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnzoo.errors import DataError
from cnnzoo.layers.shapes import Volume

BACKGROUND = 0.0  # what a transparent pixel becomes, in [0, 1]: black
_GREY = {"1", "L", "LA", "La", "I", "F"}


def read_pixels(path: Path) -> np.ndarray:
    """An image file as float32 (H, W, C) in [0, 1]; C is 1 for grey images, else 3."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return _to_unit(img)
    except FileNotFoundError:
        raise DataError(f"cannot read image {path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"cannot read image {path}: it is a directory") from None
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read image {path}: not an image format Pillow knows (png, jpg, bmp, ...)"
        ) from None
    except Exception as exc:  # PIL raises many types for damaged files and pixel bombs
        raise DataError(f"cannot read image {path}: {exc}") from None


def _to_unit(img) -> np.ndarray:  # img: PIL.Image.Image
    from PIL import Image

    if img.mode == "P" or img.mode == "PA":
        transparent = img.mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if transparent else "RGB")
        if _grey_rgb(np.asarray(img)[:, :, :3]):
            img = img.convert("LA" if transparent else "L")
    alpha = None
    if img.mode in ("RGBA", "RGBa", "LA", "La"):
        bands = img.split()
        alpha = np.asarray(bands[-1], dtype=np.float32) / 255
        if img.mode in ("RGBa", "La"):  # premultiplied: undo it before compositing
            img = img.convert("RGBA" if img.mode == "RGBa" else "LA")
            bands = img.split()
        img = bands[0] if len(bands) == 2 else Image.merge("RGB", tuple(bands[:3]))
    # float32 throughout, scaled in place: a photograph costs its float32 size once.
    if img.mode.startswith("I;16") or img.mode == "I":
        array = np.clip(np.asarray(img, dtype=np.float32), 0, 65535)
        array /= 65535
    elif img.mode == "F":
        array = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0, 1)
    elif img.mode in _GREY:
        array = np.asarray(img.convert("L"), dtype=np.float32)
        array /= 255
    else:
        array = np.asarray(img.convert("RGB"), dtype=np.float32)
        array /= 255
    if array.ndim == 2:
        array = array[:, :, None]
    if alpha is not None:
        array = array * alpha[:, :, None] + BACKGROUND * (1 - alpha[:, :, None])
    return array


def _grey_rgb(rgb: np.ndarray) -> bool:
    return bool((rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all())


def read_image(path: Path, volume: Volume) -> torch.Tensor:
    """One image file as a uint8 (C, H, W) tensor of `volume`'s size and channels."""
    from PIL import Image

    pixels = read_pixels(path)
    as_bytes = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)  # exact for 8-bit
    img = Image.fromarray(as_bytes[:, :, 0] if as_bytes.shape[2] == 1 else as_bytes)
    img = img.convert("L" if volume.depth == 1 else "RGB")  # Pillow's luma, as ever
    if img.size != (volume.width, volume.height):
        img = img.resize((volume.width, volume.height), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
