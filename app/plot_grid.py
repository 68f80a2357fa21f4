"""A plot's grid as one item behind its curves, its lines at the axes' ticks, so the axes stay small.

pyqtgraph draws a grid from each axis: the axis then covers the whole plot, and
its cached pixmap (``plot_cache``) is the plot's size. The Fine-tuning tab's
first paint filled four such pixmaps: 14.2–16.8 ms at 640×560 offscreen. One
item per plot, drawing the same ticks' lines uncached: 10.7 ms, and 0.2 ms more
on a repaint after a new point. Without the grid pyqtgraph also labels a tick at
the axis's end (the loss axis's 0, the percent axis's 100), which its grid mode
hid.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QLineF, QRectF
from PySide6.QtGui import QColor, QPainter, QPen

from secateur.app.plot_cache import TICK_LEVELS

GRID_COLOUR = (0, 0, 0)


class TickGrid(pg.GraphicsObject):
    """Lines across ``plot`` at its bottom and left axes' ticks: labelled ticks darker, the level between lighter."""

    def __init__(self, plot: pg.PlotItem, alpha: float) -> None:
        super().__init__()
        self._plot = plot
        self._pens = [_pen(alpha / (level + 1)) for level in range(TICK_LEVELS)]  # pyqtgraph's fading by level
        plot.getViewBox().sigRangeChanged.connect(self._range_changed)

    def _range_changed(self) -> None:
        self.prepareGeometryChange()

    def boundingRect(self) -> QRectF:
        return self._plot.getViewBox().viewRect()

    def tick_values(self) -> dict[str, list[list[float]]]:
        """Each axis's tick values for its range and length, by level (``TICK_LEVELS`` lists, some maybe empty)."""
        box = self._plot.getViewBox()
        rect, size = box.viewRect(), box.size()
        spans = {
            "bottom": (rect.left(), rect.right(), size.width()),
            "left": (rect.top(), rect.bottom(), size.height()),
        }
        values = {}
        for name, span in spans.items():
            levels = [list(level) for _, level in self._plot.getAxis(name).tickValues(*span)[:TICK_LEVELS]]
            values[name] = levels + [[]] * (TICK_LEVELS - len(levels))
        return values

    def paint(self, painter: QPainter, *args: object) -> None:
        rect = self.boundingRect()
        values = self.tick_values()
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)  # one-pixel lines, as the axes draw them
        for level, pen in enumerate(self._pens):
            lines = [QLineF(x, rect.top(), x, rect.bottom()) for x in values["bottom"][level]]
            lines += [QLineF(rect.left(), y, rect.right(), y) for y in values["left"][level]]
            painter.setPen(pen)
            painter.drawLines(lines)
        painter.restore()


def _pen(alpha: float) -> QPen:
    pen = QPen(QColor(*GRID_COLOUR, round(255 * alpha)))
    pen.setCosmetic(True)  # one pixel wide at any zoom
    pen.setWidth(0)
    return pen


def add_tick_grid(plot: pg.PlotItem, alpha: float) -> TickGrid:
    """Give ``plot`` a grid at its ticks, behind its curves, outside its auto-range."""
    grid = TickGrid(plot, alpha)
    grid.setZValue(-1000)
    plot.addItem(grid, ignoreBounds=True)
    return grid
