"""Pictures as PNG files: training curves, confusion matrices, filters, activation
volumes and accuracy against parameters.

Everything here takes plain numbers or numpy arrays (no torch, no run directories)
and draws with matplotlib's object API on its Agg canvas: no display, no pyplot
state, nothing that outlives the call. Files are written atomically.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnzoo.utils.files import atomic_write_with

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG, atomically (a reader never sees half a picture)."""
    path = Path(path)
    _drawable_text(fig)
    atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=DPI))
    return path


MISSING_GLYPH = "?"


def _drawable_text(fig: Figure) -> None:
    """Put MISSING_GLYPH for every character of the figure's text that none of its fonts
    can draw: a run or class name in a script the installed fonts lack (CJK on a bare
    machine) is drawn without it, not with an empty box and a warning per glyph."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        value = text.get_text()
        if value.isascii():
            continue
        drawable = _codepoints(tuple(str(p) for p in _font_paths(text)))
        fixed = "".join(c if ord(c) in drawable or c in "\n\t" else MISSING_GLYPH
                        for c in value)
        if fixed != value:
            text.set_text(fixed)


def _font_paths(text: Any) -> list[Any]:
    """The fonts matplotlib draws `text` with, its fallbacks included (matplotlib's own
    lookup for them, where this version has it)."""
    from matplotlib import font_manager

    find = getattr(font_manager.fontManager, "_find_fonts_by_props", None)
    props = text.get_fontproperties()
    return list(find(props)) if find is not None else [font_manager.findfont(props)]


@functools.lru_cache(maxsize=32)
def _codepoints(paths: tuple[str, ...]) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(itertools.chain.from_iterable(FT2Font(p).get_charmap() for p in paths))


def mosaic(tiles: np.ndarray, columns: int | None = None, gap: int = 1,
           fill: float | tuple[float, ...] = np.nan) -> np.ndarray:
    """Tiles (N, H, W) or (N, H, W, 3) laid out row by row in one image, `gap`
    pixels of `fill` (a value, or an RGB colour) between them; `columns` defaults
    to a near-square grid."""
    n, h, w = tiles.shape[:3]
    if columns is None:
        columns = max(1, math.ceil(math.sqrt(n * h / w)))
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    shape = (rows * (h + gap) - gap, columns * (w + gap) - gap, *tiles.shape[3:])
    out = np.full(shape, fill, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tiles[i]
    return out


def _rescale(values: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """Values mapped to [0, 1] by their min and max (over `axes`, per remaining index);
    a constant array becomes 0.5."""
    low = np.nanmin(values, axis=axes, keepdims=axes is not None)
    high = np.nanmax(values, axis=axes, keepdims=axes is not None)
    span = np.where(high - low > 0, high - low, 1.0)
    return np.where(high - low > 0, (values - low) / span, 0.5)


# ---- training curves


Series = dict[str, tuple[list[int], list[float]]]  # split -> (epochs, values)


def _per_split(rows: Sequence[dict[str, Any]], key: str) -> Series:
    series: Series = {}
    for row in rows:
        value = row.get(key)
        if value in (None, ""):
            continue
        epochs, values = series.setdefault(str(row["split"]), ([], []))
        epochs.append(int(row["epoch"]))
        values.append(float(value))
    return series


def curves_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Loss and accuracy per epoch for train and val (the rows of metrics.csv), with
    the test result as a star at the last epoch."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    styles = {"train": ("C0", "o"), "val": ("C1", "s"), "test": ("C3", "*")}
    for ax, key, scale, label in ((loss_ax, "loss", 1.0, "loss"),
                                  (acc_ax, "accuracy", 100.0, "accuracy (%)")):
        for split, (epochs, values) in _per_split(rows, key).items():
            color, marker = styles.get(split, ("C2", "^"))
            scaled = [v * scale for v in values]
            if split == "test":
                ax.scatter(epochs, scaled, color=color, marker=marker, s=160, zorder=3,
                           label=f"test {scaled[-1]:.2f}" if scale != 1 else "test")
            else:
                ax.plot(epochs, scaled, color=color, marker=marker, markersize=4, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    if title:
        fig.suptitle(title)
    return fig


# ---- confusion matrix


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """Rows: the true class; columns: the predicted one. Colour is the fraction of
    the row, the number is the count."""
    confusion = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    side = min(24.0, max(5.0, 0.55 * k + 2.5))
    fig = _figure(side, side)
    ax = fig.subplots()
    fractions = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ticks = np.arange(k)
    font = 9 if k <= 20 else max(4, int(180 / k))
    ax.set_xticks(ticks, labels=classes, rotation=45, ha="right", fontsize=font)
    ax.set_yticks(ticks, labels=classes, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if fractions[i, j] > 0.5 else "black")
    total = int(confusion.sum())
    accuracy = float(np.trace(confusion)) / max(1, total)
    ax.set_title(f"{title}{': ' if title else ''}accuracy {accuracy:.2%} on {total:,} images")
    return fig


# ---- filters and activation volumes


GAP_COLOUR = (0.55, 0.65, 0.8)  # between filter tiles: no filter pixel is blue-grey


def filter_tiles(weights: np.ndarray) -> np.ndarray:
    """Filters (F, C, kh, kw) as RGB tiles for `mosaic`: in colour (F, kh, kw, 3) when
    C is 3, otherwise one grey tile per filter and input channel (F*C, kh, kw, 3).
    Each tile is scaled to [0, 1] by its own min and max, as in the cs231n notes."""
    weights = np.asarray(weights, dtype=np.float64)
    f, c = weights.shape[:2]
    if c == 3:
        return _rescale(weights.transpose(0, 2, 3, 1), axes=(1, 2, 3))
    grey = _rescale(weights.reshape(f * c, *weights.shape[2:]), axes=(1, 2))
    return np.repeat(grey[..., None], 3, axis=3)


def filters_figure(weights: np.ndarray, title: str = "") -> Figure:
    """The first layer's filters (F, C, kh, kw) as a grid of small images."""
    weights = np.asarray(weights)
    f, c, kh, kw = weights.shape
    tiles = filter_tiles(weights)
    columns = c if c not in (1, 3) else None
    grid = mosaic(tiles, columns=columns, gap=1, fill=GAP_COLOUR)
    scale = max(1.0, 640 / max(grid.shape[:2]))  # small kernels still get visible pixels
    fig = _figure(max(3.0, grid.shape[1] * scale / DPI + 0.6),
                  max(3.0, grid.shape[0] * scale / DPI + 0.8))
    ax = fig.subplots()
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    shape = f"{f} filters {kw}x{kh}x{c}"
    ax.set_title(f"{title}\n{shape}" if title else shape, fontsize=9)
    return fig


@dataclass(frozen=True)
class Volume3d:
    """One layer's activation volume for one image: `values` is (D, H, W)."""

    title: str
    values: np.ndarray


def volume_grid(values: np.ndarray) -> np.ndarray:
    """A (D, H, W) volume as one image, one tile per depth slice, scaled to [0, 1]
    over the whole volume so that weak and dead slices look weak and dead."""
    return mosaic(_rescale(np.asarray(values, dtype=np.float64)), gap=1, fill=np.nan)


def _draw_volume(ax: Axes, volume: Volume3d) -> None:
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="white")
    ax.imshow(volume_grid(volume.values), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(volume.title, fontsize=8)
    ax.set_axis_off()


def _draw_image(ax: Axes, image: np.ndarray, title: str) -> None:
    """A (C, H, W) uint8 image."""
    if image.shape[0] == 3:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    else:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def activations_figure(image: np.ndarray, volumes: Sequence[Volume3d], title: str = "") -> Figure:
    """The input image, then every layer's activation volume as a grid of its
    depth slices: W x H x D shown as D tiles of W x H."""
    panels = 1 + len(volumes)
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    fig = _figure(3.6 * columns, 3.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    _draw_image(axes[0], image, f"input {image.shape[2]}x{image.shape[1]}x{image.shape[0]}")
    for ax, volume in zip(axes[1:], volumes, strict=False):
        _draw_volume(ax, volume)
    for ax in axes[panels:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def volume_figure(volume: Volume3d) -> Figure:
    """One layer's activation volume on its own, sized to its grid."""
    grid_shape = volume_grid(volume.values).shape
    scale = max(1.0, 480 / max(grid_shape))
    fig = _figure(max(3.0, grid_shape[1] * scale / DPI + 0.4),
                  max(3.0, grid_shape[0] * scale / DPI + 0.8))
    _draw_volume(fig.subplots(), volume)
    return fig


def image_figure(image: np.ndarray, title: str) -> Figure:
    fig = _figure(3, 3.3)
    _draw_image(fig.subplots(), image, title)
    return fig


# ---- accuracy against parameters


@dataclass(frozen=True)
class Point:
    """One network in a comparison."""

    label: str
    params: int
    accuracy: float  # a fraction, 0..1
    highlight: bool = False
    accuracy_sd: float | None = None  # over seeds, a fraction; drawn as an error bar
    limited: str | None = None  # why it trained less than its config asks, e.g. "1 epoch"
    budgeted: bool = False  # a time budget, not its epochs, stopped it (with `limited`)
    reference: bool = False  # a published result, not a run of this zoo


def short_count(value: float) -> str:
    """1500 -> '1.5k', 2000000 -> '2M': tick labels for parameter counts."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def accuracy_params_figure(points: Sequence[Point], title: str = "",
                           highlight_label: str = "") -> Figure:
    """Test accuracy against parameters, log-scale x, every point labelled where its label
    overlaps no other; highlighted points are drawn in their own colour and joined in order
    of size, runs cut short hollow (circles; squares where a time budget stopped them),
    published results as grey crosses."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = _figure(10, 6.5)
    ax = fig.subplots()
    runs = [p for p in points if not p.reference]
    groups = (
        ([p for p in runs if not p.highlight and not p.limited], dict(color="C0", marker="o"),
         "configs"),
        ([p for p in runs if not p.highlight and p.limited and not p.budgeted],
         dict(facecolors="none", edgecolors="C0", marker="o"), "configs cut short (epochs)"),
        # Its own shape: a budget-stopped run trained a fitted schedule, not a truncated one.
        ([p for p in runs if not p.highlight and p.limited and p.budgeted],
         dict(facecolors="none", edgecolors="C0", marker="s"),
         "configs stopped by a time budget"),
        ([p for p in points if p.reference], dict(color="0.45", marker="x"), "published"),
    )
    for group, style, label in groups:
        if group:
            ax.scatter([p.params for p in group], [100 * p.accuracy for p in group], s=40,
                       zorder=3, label=label, **style)
    marked = sorted((p for p in runs if p.highlight), key=lambda p: p.params)
    if marked:
        ax.plot([p.params for p in marked], [100 * p.accuracy for p in marked], color="C3",
                marker="D", linestyle="--", markersize=7, zorder=4,
                label=highlight_label or None)
    for p in runs:
        if p.accuracy_sd:
            ax.errorbar(p.params, 100 * p.accuracy, yerr=100 * p.accuracy_sd, color="0.3",
                        capsize=3, linewidth=1, zorder=2)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: short_count(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    if points:
        params = [p.params for p in points]
        accuracies = [100 * p.accuracy for p in points]
        ax.set_xlim(min(params) / 3, max(params) * 6)  # room for the labels
        span = max(accuracies) - min(accuracies)
        ax.set_ylim(min(accuracies) - 0.08 * span - 0.5, max(accuracies) + 0.08 * span + 0.5)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    place_labels(fig, ax, [(p.params, 100 * p.accuracy, _point_label(p)) for p in points])
    return fig


def _point_label(point: Point) -> str:
    return f"{point.label}\n{point.limited}" if point.limited else point.label


# Where a label may go around its point, nearest first: (dx, dy) in points. Each ring
# tries right, left, above and below, then the diagonals, before moving further out.
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))
_OFFSETS = tuple((dx * r, dy * r * 0.8) for r in (6, 14, 24, 36, 50, 66, 84)
                 for dx, dy in _DIRECTIONS)


def place_labels(fig: Figure, ax: Axes, anchors: Sequence[tuple[float, float, str]]) -> list:
    """Label each (x, y, text) at the nearest offset whose box overlaps no placed label,
    marker, line or legend and stays inside the axes (the least bad one where none is
    free); a label further out than its first ring gets a thin line to its point. Freezes
    the figure's layout, so that the boxes measured here are the boxes saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    fig.set_layout_engine("none")  # the layout moved the axes once; it may not again
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = [ax.transData.transform((x, y)) for x, y, _ in anchors]
    taken = _drawn_boxes(ax, renderer)
    placed = []
    # Crowded regions first: a label with fewer free places chooses before its neighbours.
    order = sorted(range(len(anchors)), key=lambda i: -sum(
        abs(centres[i][0] - c[0]) < 80 and abs(centres[i][1] - c[1]) < 30 for c in centres))
    for i in order:
        x, y, text = anchors[i]
        best, best_cost = None, math.inf
        for ring, (dx, dy) in enumerate(_OFFSETS):
            candidate = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.6)
                if ring >= len(_DIRECTIONS) else None)
            box = _text_box(candidate, renderer)
            outside = max(frame.x0 - box.x0, 0) + max(box.x1 - frame.x1, 0) + max(
                frame.y0 - box.y0, 0) + max(box.y1 - frame.y1, 0)
            # Overlap first, then leaving the axes, then distance: the least bad place
            # when no place is free.
            cost = sum(_overlap(box, other) for other in taken) * 100 + outside * 10 + ring
            if best is not None:
                best.remove() if cost < best_cost else candidate.remove()
            if best is None or cost < best_cost:
                best, best_cost = candidate, cost
            if cost == ring:  # free and inside: the nearest such place
                break
        taken.append(_text_box(best, renderer))
        placed.append(best)
    return placed


def _text_box(annotation: Any, renderer: Any) -> Any:
    """The box of an annotation's text alone (an annotation's own extent includes its line
    to the point), with two pixels of margin: extents move by a fraction of a pixel
    between draws."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer).padded(2)


def _overlap(a: Any, b: Any) -> float:
    """The area two boxes share, in square pixels."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0) * max(height, 0)


def _drawn_boxes(ax: Axes, renderer: Any) -> list:
    """Boxes a label must not cover: every marker, the legend, and the lines, sampled
    every few pixels along their segments."""
    from matplotlib.transforms import Bbox

    boxes = []
    for collection in ax.collections:  # scatter markers and error bars
        for cx, cy in collection.get_offset_transform().transform(collection.get_offsets()):
            boxes.append(Bbox.from_extents(cx - 5, cy - 5, cx + 5, cy + 5))
    for line in ax.lines:
        xy = line.get_transform().transform(line.get_xydata())
        for (x0, y0), (x1, y1) in itertools.pairwise(xy):
            steps = max(int(math.hypot(x1 - x0, y1 - y0) // 6), 1)
            for k in range(steps + 1):
                px, py = x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps
                boxes.append(Bbox.from_extents(px - 3, py - 3, px + 3, py + 3))
    legend = ax.get_legend()
    if legend is not None:
        boxes.append(legend.get_window_extent(renderer))
    return boxes
