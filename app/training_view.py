"""The fine-tuning curves as they happen: training loss per step (raw and smoothed), validation accuracy per epoch."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from secateur.core.workflow.session import TrainingLog

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


class TrainingView(pg.GraphicsLayoutWidget):
    """Two linked plots over epochs; ``show_log`` redraws both from the session's training log."""

    def __init__(self) -> None:
        super().__init__()
        self.loss_plot = self.addPlot(row=0, col=0, title="training loss per step (grey: raw, red: smoothed)")
        self.accuracy_plot = self.addPlot(row=1, col=0, title="validation accuracy % per epoch (calibration split)")
        self.accuracy_plot.setXLink(self.loss_plot)
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.setLabel("bottom", "epoch")
            plot.showGrid(x=True, y=True, alpha=0.2)
        self.raw = self.loss_plot.plot(pen=pg.mkPen("#bbbbbb"))
        self.smooth = self.loss_plot.plot(pen=pg.mkPen("#c0392b", width=2))
        self.accuracy = self.accuracy_plot.plot(pen=pg.mkPen("#2c6fbb", width=2), symbol="o", symbolBrush="#2c6fbb")

    def show_log(self, log: TrainingLog | None) -> None:
        steps = log.steps if log is not None else []
        per_epoch = max(1, log.steps_per_epoch) if log is not None else 1
        x = np.array([step for step, _ in steps], dtype=np.float64) / per_epoch
        y = np.array([loss for _, loss in steps], dtype=np.float64)
        self.raw.setData(x, y)
        self.smooth.setData(x, smoothed(y))
        epochs = log.epochs if log is not None else []
        self.accuracy.setData([r.epoch for r in epochs], [r.val_accuracy for r in epochs])
