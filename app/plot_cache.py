"""Plot axes painted from a cached pixmap, with ticks at labelled values and one level between them.

Each new point of a curve made Qt replay every axis's recorded text and lines:
about 2.5 ms per axis when the axes drew the grid (and so covered the plot),
6–7 ms per frame for the Fine-tuning tab's four axes, 0.6 ms with the cache;
with a worker holding the GIL that frame stretched to 20–30 ms. Qt redraws the
cached pixmap when the axis itself changes (its range, its size). The grid is
now an item of its own (``plot_grid``), at the same two levels of ticks:
pyqtgraph's third level made 23–38 grid lines per axis, most faint to invisible.
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
