"""Plot axes painted from a cached pixmap, so that a growing curve repaints the curve and not every tick label.

An axis that draws its plot's grid covers the whole plot, so each new point of a
curve made Qt replay the axis's recorded text and lines: about 2.5 ms per axis,
6–7 ms per frame for the Fine-tuning tab's four axes (0.6 ms with the cache),
and with a worker holding the GIL that frame stretched to 20–30 ms. Qt redraws
the cached pixmap when the axis itself changes (its range, its size).
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QGraphicsItem

AXES = ("left", "bottom")


def cache_axes(*plots: pg.PlotItem) -> None:
    """Paint the left and bottom axes of ``plots`` from a device-pixel cache."""
    for plot in plots:
        for name in AXES:
            plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
