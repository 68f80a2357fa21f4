"""The Compare tab's two plots: final accuracy against MACs and against batch-1 latency, one series per method.

Both plots share the accuracy axis (linked, so zooming one zooms the other)
and draw the same cells: a line through each method's points by increasing
cost, the points themselves (hover for the cell, click to load it) and the
unpruned model as a black star. Coordinates come from the cells' records
only, exactly as ``compare.json`` and the report have them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from secateur.app.plot_cache import cache_axes
from secateur.app.plot_grid import add_tick_grid
from secateur.core.workflow.compare import final_accuracy, target_label

# the exported report's colours (matplotlib's default cycle) and markers ("osD^v<>phX"), in the same order:
# a method looks the same here and in report.html
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SYMBOLS = ("o", "s", "d", "t1", "t", "t3", "t2", "p", "h", "x")
AXES = ("macs", "latency")


def macs_millions(entry: dict[str, Any]) -> float:
    """x of the MACs plot: MACs per image, in millions."""
    return entry["macs"] / 1e6


def latency_ms(entry: dict[str, Any]) -> float:
    """x of the latency plot: the median latency at the smallest batch measured (batch 1 by default)."""
    return float(min(entry["latency_ms"].items(), key=lambda item: int(item[0]))[1]["median"])


COST: dict[str, Callable[[dict[str, Any]], float]] = {"macs": macs_millions, "latency": latency_ms}


def _tip(x: float, y: float, data: Any) -> str:
    return f"{data[1]}\naccuracy {y:.2f}%\ncost {x:.3g}\nclick to load this model"


class ComparePlots(pg.GraphicsLayoutWidget):
    """Two linked plots; ``point_clicked`` carries the index of the clicked cell."""

    point_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # the legend is a row of its own above both plots: inside a narrow plot it would hide points
        self.legend = pg.LegendItem(labelTextSize="8pt", colCount=6)
        self.addItem(self.legend, row=0, col=0, colspan=2)
        self.plots = {"macs": self.addPlot(row=1, col=0), "latency": self.addPlot(row=1, col=1)}
        self.plots["macs"].setLabel("bottom", "MACs per image (M)")
        self.plots["latency"].setLabel("bottom", "latency (ms)")
        self.plots["latency"].setYLink(self.plots["macs"])
        for plot in self.plots.values():
            add_tick_grid(plot, alpha=0.3)
        cache_axes(*self.plots.values())
        self.scatters: dict[tuple[str, str], pg.ScatterPlotItem] = {}  # (axis, method) → its points
        self._lines: dict[tuple[str, str], pg.PlotDataItem] = {}
        self._baseline = {
            axis: pg.ScatterPlotItem(symbol="star", size=16, brush="k", pen=None, hoverable=True, tip=_unpruned_tip)
            for axis in AXES
        }
        self._selected = {
            axis: pg.ScatterPlotItem(symbol="o", size=20, brush=None, pen=pg.mkPen("k", width=2)) for axis in AXES
        }
        for axis, plot in self.plots.items():
            plot.addItem(self._baseline[axis])
            plot.addItem(self._selected[axis])
        self.set_accuracy_label("accuracy")

    def set_accuracy_label(self, stage: str) -> None:
        """The y axis says which accuracy is drawn (right after pruning, recalibrated or fine-tuned)."""
        self.plots["macs"].setLabel("left", f"{stage} %")

    def reset(self, methods: list[str]) -> None:
        """Empty plots with one (still empty) series per method, coloured and marked in the order given."""
        for (axis, _), item in [*self.scatters.items(), *self._lines.items()]:
            self.plots[axis].removeItem(item)
        self.legend.clear()
        self.scatters, self._lines = {}, {}
        for index, method in enumerate(methods):
            colour, symbol = COLOURS[index % len(COLOURS)], SYMBOLS[index % len(SYMBOLS)]
            for axis, plot in self.plots.items():
                line = plot.plot(pen=pg.mkPen(colour, width=1.5))
                scatter = pg.ScatterPlotItem(
                    symbol=symbol, size=10, brush=colour, pen=pg.mkPen("k", width=0.5), hoverable=True, tip=_tip
                )
                scatter.sigClicked.connect(self.points_clicked)
                plot.addItem(scatter)
                self.scatters[(axis, method)], self._lines[(axis, method)] = scatter, line
                if axis == "macs":
                    self.legend.addItem(scatter, method)
        self.legend.addItem(self._baseline["macs"], "unpruned")
        for axis in AXES:
            self._baseline[axis].clear()
            self._selected[axis].clear()

    def show_cells(self, records: list[dict[str, Any]], baseline: dict[str, Any] | None) -> None:
        """Draw every finished cell (index = its position in ``records``) and the unpruned model."""
        for (axis, method), scatter in self.scatters.items():
            cost = COST[axis]
            mine = sorted(
                ((cost(r), final_accuracy(r), i) for i, r in enumerate(records) if r["method"] == method),
                key=lambda point: point[0],
            )
            xs, ys = [p[0] for p in mine], [p[1] for p in mine]
            data = [(p[2], f"{method} {target_label(records[p[2]]['target'])}") for p in mine]
            scatter.setData(x=xs, y=ys, data=data)
            self._lines[(axis, method)].setData(xs, ys)
        if baseline is not None:
            batch = min(baseline["latency_ms"], key=int)
            self.plots["latency"].setLabel("bottom", f"latency, batch {batch} (ms)")
            for axis in AXES:
                self._baseline[axis].setData(x=[COST[axis](baseline)], y=[baseline["accuracy"]])

    def select(self, record: dict[str, Any] | None) -> None:
        """Ring the cell whose model is loaded (or none)."""
        for axis in AXES:
            if record is None:
                self._selected[axis].clear()
            else:
                self._selected[axis].setData(x=[COST[axis](record)], y=[final_accuracy(record)])

    def points_clicked(self, _item: pg.ScatterPlotItem, points: list[Any], _event: Any = None) -> None:
        """A click on a series (pyqtgraph hands the points under the mouse): load the first one."""
        if len(points):
            self.point_clicked.emit(int(points[0].data()[0]))


def _unpruned_tip(x: float, y: float, data: Any) -> str:
    return f"unpruned\naccuracy {y:.2f}%\ncost {x:.3g}"
