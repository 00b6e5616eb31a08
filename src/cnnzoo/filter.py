"""`cnnzoo filter`: classic fixed kernels applied to an image, side by side.

Each kernel is a `conv` layer with `weights: NAME`, parsed, planned and built by
the same code as a layer of a model file; this module only reads the image, runs
those layers and lays the results out as one PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnzoo.errors import CnnzooError, ConfigError, did_you_mean
from cnnzoo.imageio import read_pixels
from cnnzoo.layers.basic import InputSpec
from cnnzoo.layers.conv import IMPLS
from cnnzoo.layers.kernels import FIXED_KERNELS, display_range
from cnnzoo.layers.padding import PADDING_MODES
from cnnzoo.params import Where
from cnnzoo.registry import parse_layer

if TYPE_CHECKING:
    from PIL import Image

COLUMNS = 4  # panels per row of the grid
GAP = 4  # pixels around and between panels
LABEL = 16  # pixels above each panel for its name
MIN_PANEL = 96  # narrower images are enlarged (nearest neighbour) so labels fit


def load_image(path: Path) -> torch.Tensor:
    """A grayscale or RGB image file as a (C, H, W) float tensor in [0, 1], read as
    everywhere else (cnnzoo.imageio: every bit depth, alpha, palettes)."""
    pixels = read_pixels(path)  # (H, W, C)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def check_kernels(names: list[str]) -> None:
    if not names:
        raise CnnzooError(f"give at least one --kernel: {', '.join(FIXED_KERNELS)}")
    for name in names:
        if name not in FIXED_KERNELS:
            raise CnnzooError(
                f"unknown kernel '{name}'{did_you_mean(name, FIXED_KERNELS) or '.'} "
                f"Known kernels: {', '.join(FIXED_KERNELS)}"
            )


def apply_kernel(
    image: torch.Tensor, name: str, padding_mode: str = "reflect", impl: str = "direct"
) -> torch.Tensor:
    """`image` (C, H, W) through a `conv` layer with the fixed kernel `name`, one filter
    per channel, 'same' padding in `padding_mode`: the same size back."""
    from cnnzoo.build import build_layer
    from cnnzoo.plan import plan_layers

    depth, height, width = image.shape
    item = {"conv": {"filters": depth, "weights": name, "padding": "same",
                     "padding_mode": padding_mode, "impl": impl, "bias": False}}
    try:
        spec = parse_layer(item, 0, Where("--kernel", ()))
        plan = plan_layers([InputSpec(width=width, height=height, depth=depth), spec])
    except ConfigError as exc:
        fix = f"; {exc.fix}" if exc.fix else ""
        raise CnnzooError(f"--kernel {name}: {exc.what}{fix}") from None
    conv = build_layer(plan.layers[1]).eval()
    with torch.no_grad():
        return conv(image[None])[0]


def to_display(values: torch.Tensor, name: str) -> torch.Tensor:
    """Map a kernel's output to [0, 1] for viewing. Kernels whose weights sum to zero
    (edges, gradients) answer with signed values around 0: shown with 0 as mid-grey,
    scaled by the largest response an image in [0, 1] can give. The others keep the
    image's range, clipped."""
    negative, positive = display_range(name, (3, 3))
    if math.isclose(negative + positive, 0.0, abs_tol=1e-9):
        values = 0.5 + values / (2 * positive)
    return values.clamp(0.0, 1.0)


def filter_grid(image: torch.Tensor, kernels: list[str], padding_mode: str = "reflect",
                impl: str = "direct") -> Image.Image:
    """The original and one panel per kernel, labelled, as a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    panels = [("original", image)]
    panels += [(k, to_display(apply_kernel(image, k, padding_mode, impl), k)) for k in kernels]
    depth, height, width = image.shape
    scale = max(1, math.ceil(MIN_PANEL / width))
    panel_w, panel_h = width * scale, height * scale
    columns = min(len(panels), COLUMNS)
    rows = math.ceil(len(panels) / columns)
    mode = "L" if depth == 1 else "RGB"
    grid = Image.new(
        mode,
        (columns * panel_w + (columns + 1) * GAP, rows * (panel_h + LABEL) + (rows + 1) * GAP),
        255 if mode == "L" else (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (label, values) in enumerate(panels):
        row, column = divmod(i, columns)
        x = GAP + column * (panel_w + GAP)
        y = GAP + row * (panel_h + LABEL + GAP)
        pixels = (values * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        panel = Image.fromarray(pixels[..., 0] if depth == 1 else pixels, mode)
        if scale > 1:
            panel = panel.resize((panel_w, panel_h), Image.Resampling.NEAREST)
        draw.text((x, y + 1), label, fill=0 if mode == "L" else (0, 0, 0), font=font)
        grid.paste(panel, (x, y + LABEL))
    return grid


def write_filter_grid(image_path: Path, kernels: list[str], out: Path,
                      padding_mode: str = "reflect", impl: str = "direct") -> Image.Image:
    """Check everything the user gave, then write the grid to `out` (a .png) atomically."""
    from cnnzoo.files import atomic_write_with

    check_kernels(kernels)
    if padding_mode not in PADDING_MODES:
        raise CnnzooError(
            f"--padding-mode must be one of {', '.join(PADDING_MODES)}, got "
            f"'{padding_mode}'{did_you_mean(padding_mode, PADDING_MODES)}"
        )
    if impl not in IMPLS:
        raise CnnzooError(f"--impl must be one of {', '.join(IMPLS)}, got '{impl}'")
    if out.suffix.lower() != ".png":
        raise CnnzooError(f"--out must be a .png file, got {out}")
    if not out.parent.is_dir():
        raise CnnzooError(f"cannot write {out}: the directory {out.parent} does not exist")
    grid = filter_grid(load_image(image_path), kernels, padding_mode, impl)
    atomic_write_with(out, lambda handle: grid.save(handle, format="PNG"))
    return grid
