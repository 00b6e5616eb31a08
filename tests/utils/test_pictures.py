"""The accuracy-against-parameters picture reads at a glance: no label covers another
label, a marker, a line or the legend; runs cut short and published rows look different."""

from __future__ import annotations

import itertools

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


def _assert_readable(points: list[pictures.Point]) -> None:
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
    _assert_readable(record_points(records))


def test_a_crowd_of_points_still_gets_separate_labels() -> None:
    # Ten nets within a few percent of parameters and a tenth of a point of each other.
    crowd = [pictures.Point(f"net-{i}", 10_000 + 300 * i, 0.90 + 0.0001 * i) for i in range(10)]
    spread = [pictures.Point("far", 5_000_000, 0.6), pictures.Point("low", 2_000, 0.5)]
    _assert_readable(crowd + spread)


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
    assert points["lenet5"].limited is not None and points["lenet5"].limited.startswith("1 of ")
    assert points["fashion-best"].limited is None  # its config trains to a time budget
