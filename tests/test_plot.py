"""The charts of :mod:`abp_np.plot` draw what they are given where it belongs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL")

from abp_np.plot import COLOURS, line_chart, waveform  # noqa: E402


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


def test_line_chart_spans_the_plot_area_and_skips_non_finite_values():
    picture = line_chart({"a": ([0, 1, 2], [0.0, np.nan, 2.0])})
    rows, cols = _rows_cols(picture, COLOURS[0])
    # from the left axis (70 px margin) to the right edge of the plot (20 px margin): the
    # first and last points are drawn although the middle one is not a number
    assert cols.min() <= 72 and cols.max() >= 640 - 20 - 2
    # the legend's sample line is the only colour above the highest point's marker
    assert rows[cols > 600].min() > 40


def test_waveform_draws_one_band_per_signal_within_its_row():
    t = np.linspace(0, 1, 2000)
    picture = waveform({"quiet": 0.1 * np.sin(40 * t), "loud": 0.9 * np.sin(40 * t)}, row=100)
    assert picture.shape == (200, 800, 3)
    quiet, _ = _rows_cols(picture, COLOURS[0])
    loud, _ = _rows_cols(picture, COLOURS[1])
    assert quiet.min() >= 0 and quiet.max() < 100 and loud.min() >= 100
    # the loud signal's band is wider than the quiet one's
    assert np.ptp(loud) > 3 * np.ptp(quiet)
