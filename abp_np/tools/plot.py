"""Small charts drawn with Pillow, so that the demos and the benchmark need no plotting library.

:func:`line_chart` draws curves on shared axes with a legend; :func:`bar_chart` draws groups of
horizontal bars (one group per label); :func:`waveform` draws a sound signal as a band of
min/max per pixel column. Each returns an ``(H, W, 3)`` uint8 array; save it
with ``PIL.Image.fromarray(picture).save(path)``. Pillow (the ``data`` extra) is imported only
when a chart is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= raw:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step + 1e-9) + 1)]


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (640, 400),
    logx: bool = False,
    marks: dict[str, float] | None = None,
) -> np.ndarray:
    """Draw ``{label: (x, y)}`` as lines with markers on one set of axes.

    ``logx``: the x axis is logarithmic (x > 0; ticks at 1, 2, 5 times powers of ten).
    ``marks``: ``{label: x}``, vertical grey lines with their labels (e.g. a data set's size).

    Returns
    -------
    picture : ndarray (H, W, 3) uint8
    """
    from PIL import Image, ImageDraw

    W, H = size
    left, right, top, bottom = 70, 20, 40, 60
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    tx = np.log10 if logx else (lambda v: v)  # x as drawn
    xs = [float(tx(float(v))) for x, _ in series.values() for v in x]
    xs += [float(tx(float(v))) for v in (marks or {}).values()]
    ys = [float(v) for _, y in series.values() for v in y if np.isfinite(v)]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    y0 = min(y0, 0.0) if y0 >= 0 and y0 < 0.2 * (y1 - y0 + 1e-12) else y0
    pad = 0.05 * (y1 - y0 or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    if x1 <= x0:
        x1 = x0 + 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        u = left + (x - x0) / (x1 - x0) * (W - left - right)
        v = H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)
        return u, v

    # axes, ticks and grid
    draw.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for t in _ticks(y0, y1):
        _, v = px(x0, t)
        draw.line([left, v, W - right, v], fill=(225, 225, 225))
        draw.text((5, v - 6), f"{t:.3g}", fill=(0, 0, 0))
    if logx:
        decades = range(math.floor(x0), math.ceil(x1) + 1)
        xticks = [math.log10(m * 10.0**e) for e in decades for m in (1, 2, 5)]
        xticks = [t for t in xticks if x0 - 1e-9 <= t <= x1 + 1e-9]
    else:
        xticks = _ticks(x0, x1)
    for t in xticks:
        u, _ = px(t, y0)
        draw.line([u, top, u, H - bottom], fill=(235, 235, 235))
        draw.text((u - 10, H - bottom + 5), f"{10.0**t if logx else t:g}", fill=(0, 0, 0))
    for k, (label, x) in enumerate((marks or {}).items()):
        u, _ = px(float(tx(float(x))), y0)
        for v in range(top, H - bottom, 8):  # dashed
            draw.line([u, v, u, min(v + 4, H - bottom)], fill=(140, 140, 140))
        draw.text((u + 3, H - bottom - 14 - 12 * k), label, fill=(90, 90, 90))
    draw.text((left, 10), title, fill=(0, 0, 0))
    draw.text(((W - len(xlabel) * 6) // 2, H - 25), xlabel, fill=(0, 0, 0))
    draw.text((5, top - 18), ylabel, fill=(0, 0, 0))
    # curves and legend
    for k, (label, (x, y)) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [
            px(float(tx(float(a))), float(b)) for a, b in zip(x, y, strict=True) if np.isfinite(b)
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for u, v in points:
            draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=colour)
        ly = top + 8 + 16 * k
        draw.line([W - right - 150, ly + 6, W - right - 130, ly + 6], fill=colour, width=3)
        draw.text((W - right - 125, ly), label, fill=(0, 0, 0))
    return np.asarray(img)


def bar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str = "",
    xlabel: str = "",
    width: int = 760,
    row: int = 24,
) -> np.ndarray:
    """Draw one group of horizontal bars per label, one bar per series, from 0.

    ``series`` maps a legend entry to one non-negative value per label.

    Returns
    -------
    picture : ndarray (40 + row * len(labels) + 50, width, 3) uint8
    """
    from PIL import Image, ImageDraw

    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(
                f"bar_chart: series {name!r} has {len(values)} values for {len(labels)} labels"
            )
    left = 10 + 6 * max((len(s) for s in labels), default=0)
    right, top, bottom = 20, 40, 50
    H = top + row * len(labels) + bottom
    img = Image.new("RGB", (width, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    finite = [float(v) for vs in series.values() for v in vs if np.isfinite(v)]
    x1 = max(finite, default=1.0) or 1.0

    def px(v: float) -> float:
        return left + v / x1 * (width - left - right)

    for t in _ticks(0.0, x1):
        if t <= x1:
            draw.line([px(t), top, px(t), H - bottom], fill=(225, 225, 225))
            draw.text((px(t) - 10, H - bottom + 5), f"{t:g}", fill=(0, 0, 0))
    bar = max(2, (row - 6) // max(len(series), 1))
    for i, label in enumerate(labels):
        y0 = top + row * i + 3
        draw.text((5, y0 + (row - 6) // 2 - 6), label, fill=(0, 0, 0))
        for k, values in enumerate(series.values()):
            v = float(values[i])
            if np.isfinite(v) and v > 0:
                draw.rectangle(
                    [left, y0 + k * bar, px(v), y0 + (k + 1) * bar - 1],
                    fill=COLOURS[k % len(COLOURS)],
                )
    draw.line([left, top, left, H - bottom], fill=(0, 0, 0))
    draw.text((5, 5), title, fill=(0, 0, 0))
    draw.text(((width - len(xlabel) * 6) // 2, H - 25), xlabel, fill=(0, 0, 0))
    lx = left  # the legend: one line under the title, clear of the bars
    for k, name in enumerate(series):
        draw.rectangle([lx, 24, lx + 20, 32], fill=COLOURS[k % len(COLOURS)])
        draw.text((lx + 25, 22), name, fill=(0, 0, 0))
        lx += 25 + 6 * len(name) + 20
    return np.asarray(img)


def waveform(signals: dict[str, np.ndarray], width: int = 800, row: int = 90) -> np.ndarray:
    """Draw each signal (values in [-1, 1]) as a min/max band, one labelled row per signal.

    Returns
    -------
    picture : ndarray (rows * row, width, 3) uint8
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, row * len(signals)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, (label, x) in enumerate(signals.items()):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        top = k * row
        mid = top + row / 2
        draw.line([0, mid, width, mid], fill=(220, 220, 220))
        # one column of pixels per chunk of samples: (width, chunk)
        chunks = np.array_split(x, width)
        for u, c in enumerate(chunks):
            if c.size == 0:
                continue
            a, b = float(c.min()), float(c.max())
            draw.line(
                [u, mid - b * (row / 2 - 4), u, mid - a * (row / 2 - 4)],
                fill=COLOURS[k % len(COLOURS)],
            )
        draw.text((4, top + 2), label, fill=(0, 0, 0))
    return np.asarray(img)
