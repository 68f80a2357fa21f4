"""The fine-tuning curves as they happen: training loss per step (raw and smoothed), validation accuracy per epoch."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFontMetrics

from secateur.app.plot_cache import cache_axes
from secateur.app.plot_grid import add_tick_grid
from secateur.core.workflow.session import TrainingLog

# Room beyond the last epoch: pyqtgraph hides a tick label that passes its axis's end at all,
# and at 0.02 the last epoch's label ("1" of a one-epoch run) passed it and was never shown.
EPOCH_PADDING = 0.05
WIDEST_LABEL = "0.00005"  # the value axes' room: a loss near 1e-4 has labels this long; accuracy "100" fits
LOSS_MARGIN = 0.05  # of the highest loss, between it and the top of the loss axis
ACCURACY_MARGIN = 1.0  # percent points between the lowest (highest) accuracy and the axis's rounded end
SMOOTH_COLOUR = "#c0392b"
SMOOTHING = 0.9  # weight of the running average in the smoothed loss (TensorBoard's default is 0.6–0.9)


def smoothed(values: list[float] | np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """An exponential moving average, debiased so the first points are not pulled towards zero."""
    out = np.empty(len(values), dtype=np.float64)
    average, correction = 0.0, 1.0
    for index, value in enumerate(values):
        average = weight * average + (1 - weight) * float(value)
        correction *= weight
        out[index] = average / (1 - correction)
    return out


def grown_range(
    shown: tuple[float, float] | None, low: float, high: float, step: float, ceiling: float = np.inf
) -> tuple[float, float]:
    """An axis range that holds ``low``–``high``, on multiples of ``step`` up to ``ceiling``, and only ever grows.

    An axis whose range moves redraws its tick labels, the slowest part of a
    plot's paint; a range that changes only when the data leave it keeps a
    curve that grows point by point cheap to draw.
    """
    wanted = (float(np.floor(low / step) * step), float(min(ceiling, np.ceil(high / step) * step)))
    if wanted[1] <= wanted[0]:  # one value (or one at the ceiling): a step of room on the open side
        wanted = (wanted[1] - step, wanted[1]) if wanted[1] >= ceiling else (wanted[0], wanted[0] + step)
    if shown is None:
        return wanted
    return (min(shown[0], wanted[0]), max(shown[1], wanted[1]))


def nice_step(value: float) -> float:
    """Half the power of ten at or below ``value``: 2.3 → 0.5, 0.003 → 0.0005 (a loss's axis, whatever its size)."""
    return 10.0 ** np.floor(np.log10(value)) / 2 if value > 0 else 0.5


class TrainingView(pg.GraphicsLayoutWidget):
    """Two linked plots over epochs; ``show_log`` redraws both from the session's training log."""

    def __init__(self) -> None:
        super().__init__()
        # short titles: a plot is at least as wide as its title, and the Results dock is about 400 px wide
        self.loss_plot = self.addPlot(row=0, col=0, title="loss per step (grey raw, red smoothed)")
        self.accuracy_plot = self.addPlot(row=1, col=0, title="accuracy % per epoch (calibration split)")
        self.accuracy_plot.setXLink(self.loss_plot)
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.setLabel("bottom", "epoch")
            add_tick_grid(plot, alpha=0.2)
        self.raw = self.loss_plot.plot(pen=pg.mkPen("#bbbbbb"))
        smooth_pen = pg.mkPen(SMOOTH_COLOUR, width=2)
        self.smooth = self.loss_plot.plot(pen=smooth_pen, symbolBrush=SMOOTH_COLOUR, symbolPen=None)
        self.accuracy = self.accuracy_plot.plot(pen=pg.mkPen("#2c6fbb", width=2), symbol="o", symbolBrush="#2c6fbb")
        self.loss_plot.setDownsampling(auto=True, mode="peak")  # thousands of steps, a few hundred pixels
        self.loss_plot.setClipToView(True)
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.disableAutoRange()
        cache_axes(self.loss_plot, self.accuracy_plot)
        self._fix_value_widths()
        self.ranges: dict[str, tuple[float, float] | None] = {"x": None, "loss": None, "accuracy": None}

    def _fix_value_widths(self) -> None:
        """Give both value axes one fixed width, room for a label as long as WIDEST_LABEL.

        pyqtgraph sizes an axis to its labels after painting them: the first
        paint of a run ("0" … "1" where "100" was) shrank the loss axis, which
        laid the plot out again and painted every axis a second time in the
        next frame (30 ms of stalls at a fine-tune's start). Fixed and equal,
        the widths never move, and the two plots' epochs line up.
        """
        for plot in (self.loss_plot, self.accuracy_plot):
            axis = plot.getAxis("left")
            font = axis.style["tickFont"] or axis.font()
            width = QFontMetrics(font).horizontalAdvance(WIDEST_LABEL) + 2
            axis.setStyle(autoExpandTextSpace=False, tickTextWidth=width)

    def show_log(self, log: TrainingLog | None) -> None:
        steps = log.steps if log is not None else []
        per_epoch = max(1, log.steps_per_epoch) if log is not None else 1
        x = np.array([step for step, _ in steps], dtype=np.float64) / per_epoch
        y = np.array([loss for _, loss in steps], dtype=np.float64)
        self.raw.setData(x, y)
        lone = "o" if len(x) == 1 else None  # a line through one point draws nothing: the first loss is a dot
        if self.smooth.opts["symbol"] != lone:
            self.smooth.setSymbol(lone)
        self.smooth.setData(x, smoothed(y))
        epochs = log.epochs if log is not None else []
        accuracies = [r.val_accuracy for r in epochs]
        self.accuracy.setData([r.epoch for r in epochs], accuracies)
        planned = log.total_steps / per_epoch if log is not None and log.total_steps else 0.0
        planned = max(planned, float(log.planned_epochs) if log is not None else 0.0)
        if not len(x) and not epochs:
            self.ranges = dict.fromkeys(self.ranges)  # a new run starts on fresh axes
            if planned:  # its epochs, at once: each axis whose range moves repaints its labels (a frame's time)
                self._set_range("x", 0.0, planned, 1.0, self.loss_plot.setXRange, padding=EPOCH_PADDING)
                # a percent axis until the first epoch's accuracy (minutes away) sets its own range
                self.accuracy_plot.setYRange(0.0, 100.0, padding=0.02)
            return
        last = max([float(x.max()) if len(x) else 0.0, *(r.epoch for r in epochs), planned, 1.0])
        self._set_range("x", 0.0, last, 1.0, self.loss_plot.setXRange, padding=EPOCH_PADDING)
        finite = y[np.isfinite(y)]
        if len(finite):
            top = float(finite.max()) * (1 + LOSS_MARGIN)  # the highest loss's marker not on the axis's end
            self._set_range("loss", 0.0, top, nice_step(top), self.loss_plot.setYRange)
        if accuracies:
            # a point's margin from the edges: a marker at a multiple of 5 (or at 100 %) sat half outside the plot
            low, high = min(accuracies) - ACCURACY_MARGIN, max(accuracies) + ACCURACY_MARGIN
            self._set_range("accuracy", low, high, 5.0, self.accuracy_plot.setYRange, 100.0, padding=0.05)

    def _set_range(
        self, axis: str, low: float, high: float, step: float, setter, ceiling: float = np.inf, padding: float = 0.02
    ) -> None:
        grown = grown_range(self.ranges[axis], low, high, step, ceiling)
        if grown != self.ranges[axis]:
            self.ranges[axis] = grown
            setter(*grown, padding=padding)
