"""Plot axes painted from a cached pixmap, with the grid at labelled ticks and between them, not at every minor step.

An axis that draws its plot's grid covers the whole plot, so each new point of a
curve made Qt replay the axis's recorded text and lines: about 2.5 ms per axis,
6–7 ms per frame for the Fine-tuning tab's four axes (0.6 ms with the cache),
and with a worker holding the GIL that frame stretched to 20–30 ms. Qt redraws
the cached pixmap when the axis itself changes (its range, its size).

That redraw draws each grid line with its own pen: pyqtgraph's three tick levels
made 23–38 lines per axis, and the Fine-tuning tab's repaint after a range change
took 16.6 ms (12 of them grid lines, most of them at the third level, faint to
invisible at a grid alpha of 0.2). Two levels draw 5–8 lines per axis: 5.9 ms.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QGraphicsItem

AXES = ("left", "bottom")
TICK_LEVELS = 2  # labelled ticks and the step between them (pyqtgraph's maxTickLevel counts from 0)


def cache_axes(*plots: pg.PlotItem) -> None:
    """Paint the left and bottom axes of ``plots`` from a device-pixel cache, with two levels of ticks."""
    for plot in plots:
        for name in AXES:
            axis = plot.getAxis(name)
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            axis.setStyle(maxTickLevel=TICK_LEVELS - 1)
