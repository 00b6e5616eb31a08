"""cnnzoo.utils.pictures: mosaics, filter tiles, volume grids and the figures, checked
against arrays worked out by hand; and the accuracy-against-parameters picture reads at a
glance: no label covers another label, a marker, a line or the legend; runs cut short, runs
a time budget stopped and published rows look different."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cnnzoo.config.bundled import read_measured
from cnnzoo.utils import pictures
from cnnzoo.zoo.report import record_points


def _boxes(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    from matplotlib.text import Text

    labels = {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}
    return ax, renderer, labels


def _shared_area(a, b) -> float:
    return max(min(a.x1, b.x1) - max(a.x0, b.x0), 0) * max(min(a.y1, b.y1) - max(a.y0, b.y0), 0)


def assert_readable(points: list[pictures.Point]) -> None:
    fig = pictures.accuracy_params_figure(points, "t", highlight_label="trio")
    ax, renderer, labels = _boxes(fig)
    assert len(labels) == len(points)
    for (a, box_a), (b, box_b) in itertools.combinations(labels.items(), 2):
        assert _shared_area(box_a, box_b) == 0, f"the labels {a!r} and {b!r} overlap"
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend().get_window_extent(renderer)
    for text, box in labels.items():
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, f"{text!r} leaves the axes"
        assert _shared_area(box, legend) == 0, f"{text!r} covers the legend"
        for p in points:
            cx, cy = ax.transData.transform((p.params, 100 * p.accuracy))
            inside = box.x0 < cx < box.x1 and box.y0 < cy < box.y1
            assert not inside, f"{text!r} covers the point of {p.label}"


def test_the_bundled_records_picture_has_no_overlapping_labels() -> None:
    records = read_measured()
    assert records, "the bundled records are missing"
    assert_readable(record_points(records))


def test_a_crowd_of_points_still_gets_separate_labels() -> None:
    # Ten nets within a few percent of parameters and a tenth of a point of each other.
    crowd = [pictures.Point(f"net-{i}", 10_000 + 300 * i, 0.90 + 0.0001 * i) for i in range(10)]
    spread = [pictures.Point("far", 5_000_000, 0.6), pictures.Point("low", 2_000, 0.5)]
    assert_readable(crowd + spread)


def test_cut_short_runs_are_hollow_and_published_rows_are_crosses() -> None:
    points = [pictures.Point("full", 1_000, 0.9), pictures.Point("short", 2_000, 0.7,
                                                                 limited="1 of 30 epochs"),
              pictures.Point("paper", 3_000, 0.95, reference=True)]
    fig = pictures.accuracy_params_figure(points)
    ax, _, labels = _boxes(fig)
    assert "short\n1 of 30 epochs" in labels
    by_label = {c.get_label(): c for c in ax.collections}
    hollow = by_label["configs cut short (epochs)"]
    assert hollow.get_facecolor().size == 0 or hollow.get_facecolor()[0][3] == 0
    assert "published" in by_label


def test_seed_statistics_draw_an_error_bar() -> None:
    point = pictures.Point("seeds", 10_000, 0.9, accuracy_sd=0.004)
    ax = pictures.accuracy_params_figure([point]).axes[0]
    ((low, high),) = [seg[:, 1] for c in ax.collections for seg in getattr(c, "get_segments",
                                                                            list)()]
    assert (low, high) == pytest.approx((89.6, 90.4))


def test_a_record_trained_fewer_epochs_than_its_config_says_so() -> None:
    points = {p.label: p for p in record_points({
        "lenet5": {"params": 61706, "test_accuracy": 0.9, "epochs": 1},
        "fashion-best": {"params": 1, "test_accuracy": 0.95, "epochs": 43.02},
    })}
    assert points["lenet5"].limited == "1 of 10 epochs" and not points["lenet5"].budgeted
    # Its config's own time budget stopped it: the label says so and the marker differs.
    assert points["fashion-best"].limited == "43.02 of 90 epochs (50m budget)"
    assert points["fashion-best"].budgeted


def test_budget_stopped_runs_are_hollow_squares_named_in_the_legend() -> None:
    points = [pictures.Point("full", 1_000, 0.9),
              pictures.Point("short", 2_000, 0.7, limited="1 of 30 epochs"),
              pictures.Point("timed", 4_000, 0.8, limited="2.46 of 100 epochs (15m budget)",
                             budgeted=True)]
    fig = pictures.accuracy_params_figure(points)
    ax, _, labels = _boxes(fig)
    assert "timed\n2.46 of 100 epochs (15m budget)" in labels
    by_label = {c.get_label(): c for c in ax.collections}
    square, circle = by_label["configs stopped by a time budget"], by_label[
        "configs cut short (epochs)"]
    assert [tuple(o) for o in square.get_offsets()] == [(4_000, 80.0)]
    assert [tuple(o) for o in circle.get_offsets()] == [(2_000, 70.0)]
    for hollow in (square, circle):
        assert hollow.get_facecolor().size == 0 or hollow.get_facecolor()[0][3] == 0
    # A square's outline has its four corners (and the closing one); a circle's, curves.
    assert len(square.get_paths()[0].vertices) == 5
    assert len(circle.get_paths()[0].vertices) > 5
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "configs stopped by a time budget" in legend


def test_mosaic_places_tiles_row_by_row():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    grid = pictures.mosaic(tiles, columns=2, gap=1, fill=-1)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1)
    for i in range(5):
        r, c = divmod(i, 2)
        np.testing.assert_array_equal(grid[r * 3: r * 3 + 2, c * 4: c * 4 + 3], tiles[i])
    assert (grid[2, :] == -1).all() and (grid[:, 3] == -1).all()
    assert (grid[6:, 4:] == -1).all()  # the sixth cell is empty
    assert pictures.mosaic(np.zeros((16, 4, 4))).shape == (4 * 5 - 1, 4 * 5 - 1)


def test_filter_tiles_scale_each_filter():
    rng = np.random.default_rng(0)
    rgb = pictures.filter_tiles(rng.normal(size=(4, 3, 5, 5)))
    assert rgb.shape == (4, 5, 5, 3)
    np.testing.assert_allclose(rgb.min(axis=(1, 2, 3)), 0)
    np.testing.assert_allclose(rgb.max(axis=(1, 2, 3)), 1)
    grey = pictures.filter_tiles(rng.normal(size=(4, 2, 3, 3)))
    assert grey.shape == (8, 3, 3, 3) and (grey[..., 0] == grey[..., 2]).all()
    weights = np.array([[[[1.0, 3.0], [5.0, 3.0]]]])
    np.testing.assert_allclose(pictures.filter_tiles(weights)[0, ..., 0], [[0, 0.5], [1, 0.5]])


def test_volume_grid_keeps_dead_slices_dark():
    volume = np.stack([np.zeros((3, 3)), np.full((3, 3), 2.0), np.eye(3) * 4])
    grid = pictures.volume_grid(volume)
    assert grid.shape == (7, 7)
    np.testing.assert_array_equal(grid[0:3, 0:3], 0)
    np.testing.assert_array_equal(grid[0:3, 4:7], 0.5)
    np.testing.assert_array_equal(grid[4:7, 0:3], np.eye(3))
    assert np.isnan(grid[3]).all()


def test_confusion_figure_title_and_labels():
    confusion = np.array([[3, 1], [0, 4]])
    fig = pictures.confusion_figure(confusion, ["cat", "dog"], "pets")
    ax = fig.axes[0]
    assert ax.get_title() == "pets: accuracy 87.50% on 8 images"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "3", "4"]


def test_curves_figure_plots_each_split():
    rows = [{"epoch": e, "split": s, "loss": 1 / e, "accuracy": 0.5 + e / 10}
            for e in (1, 2, 3) for s in ("train", "val")]
    rows.append({"epoch": 3, "split": "test", "loss": 0.4, "accuracy": 0.81})
    loss_ax, acc_ax = pictures.curves_figure(rows, "run").axes
    lines = {line.get_label(): line for line in acc_ax.get_lines()}
    np.testing.assert_allclose(lines["val"].get_ydata(), [60, 70, 80])
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "val"]
    assert "test 81.00" in [t.get_text() for t in acc_ax.get_legend().get_texts()]


def test_accuracy_params_figure():
    points = [pictures.Point("a", 1_000, 0.8), pictures.Point("b", 1_000_000, 0.9, True),
              pictures.Point("c", 20_000, 0.85, True)]
    ax = pictures.accuracy_params_figure(points, "t", highlight_label="trio").axes[0]
    assert ax.get_xscale() == "log"
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "c"]
    joined = ax.get_lines()[0]
    np.testing.assert_array_equal(joined.get_xdata(), [20_000, 1_000_000])  # by size
    assert [pictures.short_count(v) for v in (999, 1500, 2_000_000)] == ["999", "1.5k", "2M"]
