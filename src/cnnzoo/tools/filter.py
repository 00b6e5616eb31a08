"""`cnnzoo filter`: classic fixed kernels and frequency-domain filters applied to an
image, side by side, optionally with each panel's spectrum.

Each kernel is a `conv` layer with `weights: NAME` and each frequency filter a
`freq_filter` layer, parsed, planned and built by the same code as a layer of a model
file; this module reads the image, runs those layers a channel at a time at the
image's full size in float32, and shrinks every result to a display size at once, so
that a photograph of tens of megapixels costs a few times its own size in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from cnnzoo.data.images import read_pixels
from cnnzoo.errors import CnnzooError, ConfigError, did_you_mean
from cnnzoo.layers.basic import InputSpec
from cnnzoo.layers.conv import IMPLS
from cnnzoo.layers.freq import SHAPES
from cnnzoo.layers.kernels import FIXED_KERNELS, display_range
from cnnzoo.layers.padding import PADDING_MODES
from cnnzoo.layers.registry import parse_layer
from cnnzoo.utils.params import Where

if TYPE_CHECKING:
    from PIL import Image

COLUMNS = 4  # panels per row of the grid
GAP = 4  # pixels around and between panels
LABEL = 16  # pixels above each panel for its name
MIN_PANEL = 96  # narrower images are enlarged (nearest neighbour) so labels fit
DISPLAY = 1024  # the longest side of a panel unless --full-size
BAND_ROWS = 512  # rows of a photograph convolved at a time (see in_bands)


def load_image(path: Path) -> torch.Tensor:
    """A grayscale or RGB image file as a (C, H, W) float tensor in [0, 1], read as
    everywhere else (cnnzoo.data.images: every bit depth, alpha, palettes)."""
    pixels = read_pixels(path)  # (H, W, C)
    # A view, not a copy: a photograph is filtered a channel at a time.
    return torch.from_numpy(pixels).permute(2, 0, 1)


def check_kernels(names: list[str]) -> None:
    for name in names:
        if name not in FIXED_KERNELS:
            raise CnnzooError(
                f"unknown kernel '{name}'{did_you_mean(name, FIXED_KERNELS) or '.'} "
                f"Known kernels: {', '.join(FIXED_KERNELS)}"
            )


@dataclass(frozen=True)
class FrequencyOptions:
    """The frequency-domain filters asked for on the command line."""

    lowpass: tuple[float, ...] = ()  # --lowpass C, repeatable
    highpass: tuple[float, ...] = ()  # --highpass C, repeatable
    bandpass: tuple[tuple[float, float], ...] = ()  # --bandpass LOW HIGH
    shape: str = "gaussian"  # --shape, for all of them

    def layers(self) -> list[tuple[str, dict[str, Any]]]:
        """(the option as typed, the freq_filter layer's parameters) for each filter."""
        if self.shape not in SHAPES:
            raise CnnzooError(f"--shape must be one of {', '.join(SHAPES)}, got "
                              f"'{self.shape}'{did_you_mean(self.shape, SHAPES)}")
        out = [(f"--lowpass {c:g}", {"kind": "lowpass", "cutoff": c}) for c in self.lowpass]
        out += [(f"--highpass {c:g}", {"kind": "highpass", "cutoff": c}) for c in self.highpass]
        out += [(f"--bandpass {lo:g} {hi:g}", {"kind": "bandpass", "low": lo, "high": hi})
                for lo, hi in self.bandpass]
        return [(option, {**params, "shape": self.shape}) for option, params in out]


def _build_layer(item: dict[str, Any], option: str, image: torch.Tensor) -> torch.nn.Module:
    """One layer of a model file on a single channel of `image`; its config errors are
    reported against the command-line option that asked for it."""
    from cnnzoo.model.build import build_layer
    from cnnzoo.model.plan import plan_layers

    _, height, width = image.shape
    try:
        spec = parse_layer(item, 0, Where(option, ()))
        plan = plan_layers([InputSpec(width=width, height=height, depth=1), spec])
    except ConfigError as exc:
        raise _option_error(option, exc) from None
    return build_layer(plan.layers[1]).eval()


def _option_error(option: str, exc: ConfigError) -> CnnzooError:
    fix = exc.fix or ""
    if "padding_mode:" in fix:
        # The filter pads by half the kernel by itself; of the fixes the model language
        # offers, only the mode is the user's, and it is set with --padding-mode.
        fix = "use --padding-mode " + fix.split("padding_mode:", 1)[1].strip()
    return CnnzooError(f"{option}: {exc.what}{f'; {fix}' if fix else ''}")


def check_frequency(frequency: FrequencyOptions) -> None:
    """Each frequency filter's parameters, checked before the image is read."""
    for option, params in frequency.layers():
        try:
            parse_layer({"freq_filter": params}, 0, Where(option, ()))
        except ConfigError as exc:
            raise _option_error(option, exc) from None


def kernel_layer(image: torch.Tensor, name: str, padding_mode: str = "reflect",
                 impl: str = "direct") -> torch.nn.Module:
    """A `conv` layer applying the fixed kernel `name` to one channel, 'same' padding."""
    item = {"conv": {"filters": 1, "weights": name, "padding": "same",
                     "padding_mode": padding_mode, "impl": impl, "bias": False}}
    return _build_layer(item, f"--kernel {name}", image)


def apply_kernel(image: torch.Tensor, name: str, padding_mode: str = "reflect",
                 impl: str = "direct") -> torch.Tensor:
    """`image` (C, H, W) through the fixed kernel `name`, channel by channel: the same
    size back."""
    conv = kernel_layer(image, name, padding_mode, impl)
    with torch.no_grad():
        return torch.cat([conv(channel[None])[0] for channel in image.split(1)])


def to_display(values: torch.Tensor, name: str) -> torch.Tensor:
    """Map a kernel's output to [0, 1] for viewing. Kernels whose weights sum to zero
    (edges, gradients) answer with signed values around 0: shown with 0 as mid-grey,
    scaled by the largest response an image in [0, 1] can give. The others keep the
    image's range, clipped."""
    negative, positive = display_range(name, (3, 3))
    if math.isclose(negative + positive, 0.0, abs_tol=1e-9):
        values = 0.5 + values / (2 * positive)
    return values.clamp(0.0, 1.0)


def signed_display(values: torch.Tensor) -> torch.Tensor:
    """A high- or band-pass result (zero mean, no natural bound) around mid-grey, three
    standard deviations to black and white."""
    spread = float(values.std()) if values.numel() > 1 else 0.0
    return (0.5 + values / (6 * spread if spread > 0 else 1.0)).clamp(0.0, 1.0)


def display_size(height: int, width: int, full_size: bool = False) -> tuple[int, int]:
    """(h, w) of a panel: the image's, or shrunk so the longer side is at most DISPLAY."""
    if full_size or max(height, width) <= DISPLAY:
        return height, width
    scale = DISPLAY / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) averaged over areas down to (C, h, w): what a viewer shows when it
    draws the image smaller."""
    if tuple(values.shape[-2:]) == size:
        return values
    return F.interpolate(values[None], size=size, mode="area")[0]


def centred_log_spectrum(grey: torch.Tensor) -> torch.Tensor:
    """log(1 + |DFT|) of an (H, W) image with frequency 0 in the middle, as
    np.fft.fftshift(np.log1p(np.abs(np.fft.fft2(grey)))), from the half spectrum of a
    real FFT (|X[-k]| = |X[k]|), so a photograph needs no full complex spectrum."""
    height, width = grey.shape
    half = torch.fft.rfft2(grey).abs().log1p_()  # (H, W // 2 + 1)
    full = grey.new_empty(height, width)
    full[:, : width // 2 + 1] = half
    rows = (-torch.arange(height)) % height  # the row of -k
    full[:, width // 2 + 1 :] = half[:, 1 : width - width // 2][rows].flip(1)
    del half
    return torch.fft.fftshift(full)


def transfer_function(name: str, height: int, width: int, size: tuple[int, int] = (3, 3)
                      ) -> torch.Tensor:
    """The fixed kernel's transfer function on an (H, W) grid, the half a real FFT keeps
    (H, W // 2 + 1). conv2d is a cross-correlation (y[n] = sum_d g[d] x[n + d], with
    the kernel's centre at d = 0), whose transfer function is the conjugate of the
    kernel's DFT."""
    from cnnzoo.layers.kernels import fixed_kernel

    weights = fixed_kernel(name).weights(size)
    centre = ((size[0] - 1) // 2, (size[1] - 1) // 2)
    embedded = torch.zeros(height, width)
    for i, row in enumerate(weights):
        for j, w in enumerate(row):
            embedded[(i - centre[0]) % height, (j - centre[1]) % width] += w
    return torch.fft.rfft2(embedded).conj_physical_()


def blur_in_frequency(channel: torch.Tensor, transfer: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """A (1, H, W) channel's spectrum times gaussian_blur's transfer function, transformed
    back: the kernel's circular 'same' convolution, by the convolution theorem."""
    _, height, width = channel.shape
    if transfer is None:
        transfer = transfer_function("gaussian_blur", height, width)
    spectrum = torch.fft.rfft2(channel[0].to(torch.float32 if channel.dtype != torch.float64
                                             else torch.float64))
    spectrum *= transfer.to(spectrum.dtype)
    return torch.fft.irfft2(spectrum, s=(height, width))[None].to(channel.dtype)


@dataclass
class Panel:
    label: str
    values: torch.Tensor  # (C, h, w) in [0, 1], at display size
    spectrum: torch.Tensor | None = None  # (1, h, w) centred log-magnitude, unscaled


@dataclass
class FilterResult:
    grid: Image.Image
    panels: list[Panel]
    notes: list[str] = field(default_factory=list)  # lines for the user (the theorem check)


Operation = Callable[[torch.Tensor], torch.Tensor]  # (1, H, W) channel -> (1, H, W)


def _panel(image: torch.Tensor, label: str, make: Callable[[], Operation],
           display: Callable[[torch.Tensor], torch.Tensor], size: tuple[int, int],
           spectrum: bool) -> Panel:
    """The operation `make` builds, on every channel at full size; each result is
    shrunk at once, and only the grey mean of the channels is kept whole, for the
    spectrum. Built here and dropped on return, so that one filter's mask (a float per
    pixel) is alive at a time."""
    operation = make()
    small, grey = [], None
    with torch.no_grad():
        for channel in image.split(1):
            result = operation(channel)
            if spectrum:
                part = result[0] / len(image)
                grey = part if grey is None else grey.add_(part)
            small.append(shrink(result, size))
            del result
        values = display(torch.cat(small))
        log_magnitude = None
        if grey is not None:
            log_magnitude = shrink(centred_log_spectrum(grey)[None], size)
    return Panel(label, values, log_magnitude)


def _clamp(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(0.0, 1.0)


def filter_panels(image: torch.Tensor, kernels: list[str], frequency: FrequencyOptions,
                  padding_mode: str = "reflect", impl: str = "direct", spectrum: bool = False,
                  full_size: bool = False) -> tuple[list[Panel], list[str]]:
    """The original and one panel per kernel and frequency filter; with `spectrum`,
    also gaussian_blur computed as a product in frequency. Returns notes for the user:
    how far the spatial blur and that product differ."""
    size = display_size(*image.shape[1:], full_size=full_size)
    jobs: list[tuple[str, Callable[[], Operation], Callable[[torch.Tensor], torch.Tensor]]]
    jobs = [("original", lambda: _unchanged, _clamp)]
    for name in kernels:
        jobs.append((name, lambda n=name: in_bands(kernel_layer(image, n, padding_mode, impl),
                                                    wrap=padding_mode == "circular"),
                     lambda v, n=name: to_display(v, n)))
    for option, params in frequency.layers():
        label = option.removeprefix("--") + ("" if params["shape"] == "gaussian"
                                             else f" {params['shape']}")
        jobs.append((label,
                     lambda p=params, o=option: on_channels(
                         _build_layer({"freq_filter": p}, o, image)),
                     _clamp if params["kind"] == "lowpass" else signed_display))
    notes = []
    if "gaussian_blur" in kernels:
        notes.append(theorem_note(image))
        if spectrum:
            jobs.append(("gaussian_blur as H(f) X(f)", lambda: _frequency_blur(image), _clamp))
    return [_panel(image, *job, size, spectrum) for job in jobs], notes


def _frequency_blur(image: torch.Tensor) -> Operation:
    transfer = transfer_function("gaussian_blur", *image.shape[1:])
    return lambda channel: blur_in_frequency(channel, transfer)


def _unchanged(channel: torch.Tensor) -> torch.Tensor:
    return channel


def on_channels(layer: torch.nn.Module) -> Operation:
    """A layer built for a (1, 1, H, W) input as an operation on a (1, H, W) channel."""
    return lambda channel: layer(channel[None])[0]


def in_bands(conv: torch.nn.Module, wrap: bool = False, halo: int = 1) -> Operation:
    """A 'same' conv whose kernel reaches `halo` rows up and down, on a (1, H, W) channel
    a band of BAND_ROWS rows at a time, each with `halo` rows of its neighbours, whose
    outputs are cut off again. The result is the same (the layer's own padding still
    applies at the image's top and bottom; with `wrap`, circular padding, the rows
    beyond them are the other end's), but the CPU convolution unfolds the 3x3 windows
    of one band (9 floats per pixel), not of the whole photograph."""
    def run(channel: torch.Tensor) -> torch.Tensor:
        height = channel.shape[1]
        if height <= BAND_ROWS:
            return conv(channel[None])[0]
        source, offset = channel, 0
        if wrap:
            source = torch.cat([channel[:, -halo:], channel, channel[:, :halo]], dim=1)
            offset = halo
        out = torch.empty_like(channel)
        for top in range(0, height, BAND_ROWS):
            bottom = min(height, top + BAND_ROWS)
            lo = max(0, top + offset - halo)
            hi = min(source.shape[1], bottom + offset + halo)
            band = conv(source[None, :, lo:hi])[0]
            out[:, top:bottom] = band[:, top + offset - lo : bottom + offset - lo]
        return out

    return run


def theorem_note(image: torch.Tensor) -> str:
    """The convolution theorem checked on this image: gaussian_blur as a spatial conv
    with circular padding against the spectrum times the kernel's transfer function."""
    conv = kernel_layer(image, "gaussian_blur", "circular")
    transfer = transfer_function("gaussian_blur", *image.shape[1:])
    largest = 0.0
    with torch.no_grad():
        for channel in image.split(1):
            difference = blur_in_frequency(channel, transfer)
            difference -= in_bands(conv, wrap=True)(channel)
            largest = max(largest, float(difference.abs_().max()))
            del difference
    return ("gaussian_blur: the spatial convolution (circular padding) and the image's "
            f"spectrum times the kernel's transfer function differ by at most {largest:.2g} "
            "(pixel values in [0, 1])")


def filter_grid(panels: list[Panel]) -> Image.Image:
    """The panels (each followed by its spectrum, if it has one), labelled, as a PIL
    image. Spectra share one scale, the original's, so a filter's effect shows as what
    it darkens."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = []
    peak = float(panels[0].spectrum.max()) if panels[0].spectrum is not None else 1.0
    for panel in panels:
        tiles.append((panel.label, panel.values))
        if panel.spectrum is not None:
            grey = (panel.spectrum / peak).clamp(0.0, 1.0)
            tiles.append((f"|F| {panel.label}", grey.expand(len(panel.values), -1, -1)))
    depth, height, width = tiles[0][1].shape
    scale = max(1, math.ceil(MIN_PANEL / width))
    panel_w, panel_h = width * scale, height * scale
    columns = min(len(tiles), COLUMNS)
    rows = math.ceil(len(tiles) / columns)
    mode = "L" if depth == 1 else "RGB"
    grid = Image.new(
        mode,
        (columns * panel_w + (columns + 1) * GAP, rows * (panel_h + LABEL) + (rows + 1) * GAP),
        255 if mode == "L" else (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (label, values) in enumerate(tiles):
        row, column = divmod(i, columns)
        x = GAP + column * (panel_w + GAP)
        y = GAP + row * (panel_h + LABEL + GAP)
        pixels = (values * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        tile = Image.fromarray(pixels[..., 0] if depth == 1 else pixels, mode)
        if scale > 1:
            tile = tile.resize((panel_w, panel_h), Image.Resampling.NEAREST)
        draw.text((x, y + 1), label, fill=0 if mode == "L" else (0, 0, 0), font=font)
        grid.paste(tile, (x, y + LABEL))
    return grid


def write_filter_grid(image_path: Path, kernels: list[str], out: Path,
                      padding_mode: str = "reflect", impl: str = "direct",
                      frequency: FrequencyOptions | None = None, spectrum: bool = False,
                      full_size: bool = False) -> FilterResult:
    """Check everything the user gave, then write the grid to `out` (a .png) atomically."""
    from cnnzoo.utils.files import atomic_write_with, check_writable

    frequency = frequency or FrequencyOptions()
    check_kernels(kernels)
    check_frequency(frequency)
    if not kernels and not frequency.layers():
        raise CnnzooError(f"give at least one --kernel ({', '.join(FIXED_KERNELS)}) or "
                          "--lowpass, --highpass or --bandpass")
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
    check_writable(out)
    panels, notes = filter_panels(load_image(image_path), kernels, frequency, padding_mode,
                                  impl, spectrum, full_size)
    grid = filter_grid(panels)
    atomic_write_with(out, lambda handle: grid.save(handle, format="PNG"))
    return FilterResult(grid, panels, notes)
