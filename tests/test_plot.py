"""The charts of :mod:`abp_np.tools.plot` draw what they are given where it belongs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL")

from abp_np.tools.plot import COLOURS, bar_chart, line_chart, waveform  # noqa: E402


def _rows_cols(picture: np.ndarray, colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero((picture == colour).all(axis=-1))


def test_line_chart_rising_series_rises_and_falling_series_falls():
    x = [0.0, 1.0, 2.0, 3.0]
    picture = line_chart({"up": (x, [1.0, 2.0, 3.0, 4.0]), "down": (x, [4.0, 3.0, 2.0, 1.0])})
    assert picture.shape == (400, 640, 3) and picture.dtype == np.uint8
    for colour, rising in ((COLOURS[0], True), (COLOURS[1], False)):
        rows, cols = _rows_cols(picture, colour)
        plot = cols < 640 - 20 - 150  # leave out the legend's sample line
        rows, cols = rows[plot], cols[plot]
        assert rows.size > 100
        left = rows[cols < np.median(cols)].mean()
        right = rows[cols >= np.median(cols)].mean()
        # image rows grow downwards: a rising curve is higher (smaller row) on the right
        assert (right < left) == rising


def test_line_chart_puts_points_where_the_axes_say_and_skips_non_finite_values():
    picture = line_chart({"a": ([0, 1, 2], [0.0, np.nan, 2.0])})
    rows, cols = _rows_cols(picture, COLOURS[0])
    # Layout of a 640 x 400 chart: plot area x in [70, 620], y in [40, 340]; the y range
    # [0, 2] is padded by 5 % to [-0.1, 2.1]. Point (0, 0) lands at (70, 340 - 300 * 0.1 / 2.2)
    # and point (2, 2) at (620, 340 - 300 * 2.1 / 2.2), although the middle one is NaN.
    assert cols.min() <= 72 and cols.max() >= 618
    assert abs(rows[cols <= 73].mean() - (340 - 300 * 0.1 / 2.2)) < 4
    assert abs(rows[cols >= 617].mean() - (340 - 300 * 2.1 / 2.2)) < 4


def test_waveform_draws_one_band_per_signal_within_its_row():
    t = np.linspace(0, 1, 2000)
    picture = waveform({"quiet": 0.1 * np.sin(40 * t), "loud": 0.9 * np.sin(40 * t)}, row=100)
    assert picture.shape == (200, 800, 3)
    quiet, _ = _rows_cols(picture, COLOURS[0])
    loud, _ = _rows_cols(picture, COLOURS[1])
    assert quiet.max() < 100 and loud.min() >= 100  # each band inside its own row
    # the loud signal's band is wider than the quiet one's
    assert np.ptp(loud) > 3 * np.ptp(quiet)


def test_bar_chart_bar_lengths_follow_the_values():
    picture = bar_chart(["short", "long"], {"a": [1.0, 2.0], "b": [0.5, 0.0]}, width=500)
    assert picture.shape == (40 + 2 * 24 + 50, 500, 3)
    left = 10 + 6 * len("short")  # the axis: after the longest label
    lengths = {}
    for k, colour in enumerate(COLOURS[:2]):
        rows, cols = _rows_cols(picture, colour)
        assert rows.min() < 40  # the legend's swatch, above the bars
        bars = rows >= 40
        rows, cols = rows[bars], cols[bars]
        for group in (0, 1):
            inside = (rows >= 40 + 24 * group) & (rows < 40 + 24 * (group + 1))
            lengths[k, group] = (cols[inside].max() - left) if inside.any() else 0
    span = 500 - 20 - left  # the largest value (2.0) reaches the right edge
    assert abs(lengths[0, 1] - span) <= 2
    assert abs(lengths[0, 0] - span / 2) <= 2
    assert abs(lengths[1, 0] - span / 4) <= 2
    assert lengths[1, 1] == 0  # a zero draws nothing


def test_bar_chart_refuses_a_series_of_the_wrong_length():
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        bar_chart(["a", "b", "c"], {"x": [1.0, 2.0]})


def test_line_chart_log_x_puts_each_decade_at_equal_distance_and_draws_marks():
    # x = 10, 100, 1000 on a log axis: the three points are equally spaced across the plot
    # area x in [70, 620] (at 70, 345, 620); a mark at x = 100 is a grey dashed line at 345
    picture = line_chart({"a": ([10, 100, 1000], [1.0, 1.0, 1.0])}, logx=True, marks={"m": 100})
    rows, cols = _rows_cols(picture, COLOURS[0])
    plot = cols < 640 - 20 - 150
    assert cols[plot].min() <= 72 and abs(np.median(cols[(cols > 300) & (cols < 390)]) - 345) <= 3
    grey_rows, grey_cols = _rows_cols(picture, (140, 140, 140))
    inside = (grey_cols > 75) & (grey_cols < 615) & (grey_rows > 40) & (grey_rows < 340)
    # a dashed line (4 of every 8 pixels) down the plot area's 300 rows, at x = 345
    assert inside.sum() > 120 and abs(np.median(grey_cols[inside]) - 345) <= 1
