"""Importance heatmaps: the selected group's channels, and an overview strip of every group."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True, background="w", foreground="k")

ROW_WIDTH = 32  # channels per heatmap row


def channel_grid(values: np.ndarray, width: int = ROW_WIDTH) -> np.ndarray:
    """Channels laid out in rows of ``width`` (row-major), NaN where the last row runs out."""
    rows = max(1, math.ceil(len(values) / width))
    grid = np.full(rows * width, np.nan, dtype=np.float32)
    grid[: len(values)] = values
    return grid.reshape(rows, width)


def overview_grid(groups: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One row per group, each normalised to [0, 1], NaN-padded to the widest group."""
    width = max((len(values) for _, values in groups), default=1)
    grid = np.full((max(1, len(groups)), width), np.nan, dtype=np.float32)
    for row, (_, values) in enumerate(groups):
        low, high = float(np.min(values)), float(np.max(values))
        grid[row, : len(values)] = (values - low) / (high - low) if high > low else 0.5
    return grid


class HeatmapPanel(QWidget):
    """The selected group's heatmap with a colour bar and hover read-out, above the overview strip."""

    group_clicked = Signal(str)
    channel_clicked = Signal(str, int)  # group id, channel

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Select a layer to see its channels' importance")
        self.title.setWordWrap(True)
        self.hover = QLabel(" ")
        self.view = pg.GraphicsLayoutWidget()
        self.view.setMinimumSize(220, 160)  # a heatmap narrower than this shows nothing readable
        self.plot = self.view.addPlot(row=0, col=0)
        self.plot.setLabel("bottom", f"channel (mod {ROW_WIDTH})")
        self.plot.setLabel("left", f"channel ÷ {ROW_WIDTH}")
        self.plot.invertY(True)
        self.plot.getAxis("left").setTickSpacing(major=1, minor=1)  # whole rows of channels
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"), label="importance")
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        self.strip = pg.GraphicsLayoutWidget()
        self.strip.setMaximumHeight(170)
        self.strip_plot = self.strip.addPlot()
        self.strip_plot.setLabel("left", "groups")
        self.strip_plot.setLabel("bottom", "channel")
        self.strip_plot.invertY(True)
        self.strip_image = pg.ImageItem()
        self.strip_image.setColorMap(pg.colormap.get("viridis"))
        self.strip_plot.addItem(self.strip_image)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.view, stretch=3)
        layout.addWidget(self.hover)
        overview = QLabel("Overview: every scored group, one row each (normalised per group)")
        overview.setWordWrap(True)
        layout.addWidget(overview)
        layout.addWidget(self.strip, stretch=1)
        self._values = np.zeros(0)
        self._strip_ids: list[str] = []
        self.plot.scene().sigMouseMoved.connect(self._on_hover)
        self.strip_plot.scene().sigMouseClicked.connect(self._on_strip_click)
        self.plot.scene().sigMouseClicked.connect(self._on_channel_click)
        self._group_id = ""

    def show_note(self, text: str) -> None:
        """Say what to look at when there is no channel heatmap to draw (block methods)."""
        self.show_group("", None)
        self.title.setText(text)

    def show_group(self, group_id: str, values: np.ndarray | None) -> None:
        """Draw one group's per-channel importance (or clear it when it has none yet)."""
        self._group_id = group_id
        if values is None or len(values) == 0:
            self.title.setText(f"{group_id}: no scores yet" if group_id else "No scores yet: run a method")
            self.image.clear()
            self._values = np.zeros(0)
            return
        self._values = np.asarray(values, dtype=np.float32)
        low, high = float(self._values.min()), float(self._values.max())
        self.title.setText(f"{group_id}: {len(self._values)} channels, importance {low:.3g} … {high:.3g}")
        self.image.setImage(channel_grid(self._values), autoLevels=False)
        self.colorbar.setLevels((low, high if high > low else low + 1e-12))

    def show_overview(self, groups: list[tuple[str, np.ndarray]]) -> None:
        self._strip_ids = [group_id for group_id, _ in groups]
        if groups:
            self.strip_image.setImage(overview_grid(groups), levels=(0, 1))
        else:
            self.strip_image.clear()

    def _on_hover(self, position: QPointF) -> None:
        if not len(self._values) or not self.plot.sceneBoundingRect().contains(position):
            return
        channel = self._channel_at(position)
        if channel is not None:
            self.hover.setText(f"channel {channel}: importance {self._values[channel]:.4g}")

    def _channel_at(self, position: QPointF) -> int | None:
        point = self.plot.vb.mapSceneToView(position)
        column, row = math.floor(point.x()), math.floor(point.y())
        channel = row * ROW_WIDTH + column
        return channel if 0 <= column < ROW_WIDTH and 0 <= channel < len(self._values) else None

    def _on_channel_click(self, event) -> None:
        channel = self._channel_at(event.scenePos())
        if channel is not None:
            self.channel_clicked.emit(self._group_id, channel)

    def _on_strip_click(self, event) -> None:
        point = self.strip_plot.vb.mapSceneToView(event.scenePos())
        row = math.floor(point.y())
        if 0 <= row < len(self._strip_ids):
            self.group_clicked.emit(self._strip_ids[row])
