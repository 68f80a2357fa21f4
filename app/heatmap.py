"""Importance heatmaps: the selected group's channels, and an overview strip of every group."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from secateur.app.plot_cache import cache_axes

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True, background="w", foreground="k")

ROW_WIDTH = 32  # channels per heatmap row
REMOVED_COLOUR = "#e0245e"
SELECT_TITLE = "Select a layer in the tree or a row of the overview"
CHANGED = {"finetune": "fine-tuned", "recalibrate-bn": "recalibrated"}  # a history step's label; else a pruning
LABEL_PX = 14  # height of one overview row label
STRIP_AXES_PX = 60  # the overview's bottom axis and margins
STRIP_MAX_PX = 280
LABEL_CHARS = 20  # longer group names elide in the middle: the overview's image keeps most of the width
END_LABEL_ROOM = 30  # px an end label of the overview's channel axis may pass the axis (half of "100000")


def empty_text(group_id: str, scored: bool = False, changed_by: str = "") -> tuple[str, str]:
    """Title and centre text when there is no heatmap to draw: what is true now, and what to do.

    ``scored``: the current model has scores (so a layer just needs selecting); ``changed_by``: the last step
    that replaced the model (a method's id, "finetune", "recalibrate-bn"), whose scores were dropped with it.
    """
    prefix = f"{group_id}: " if group_id else ""
    if scored:
        if group_id:
            return f"{group_id}: not scored by this method", "Select another layer, or a row of the overview."
        return SELECT_TITLE, f"{SELECT_TITLE} to see its channels' importance here."
    if changed_by:
        what = CHANGED.get(changed_by, "pruned")
        how = "" if changed_by in CHANGED else f" with {changed_by}"
        return (
            f"{prefix}Model {what}: run the method again to score the {what} model",
            f"The scores belonged to the model before it was {what}{how}; its channels are not the same. "
            "Press Run (right) to score the current model.",
        )
    if group_id:
        return f"{group_id}: no scores yet", f"{group_id} has no scores yet: pick a method on the right and press Run."
    return (
        "No scores yet: run a method",
        "Run a method (right), then select a layer in the tree to see its channels' importance here.",
    )


def row_label(group_id: str, members: Sequence[str], room: int = LABEL_CHARS) -> str:
    """An overview row's label: the group's root layer (middle-elided to ``room`` characters), and how many more
    layers share its channels; hovering the row names them all."""
    name = group_id if len(group_id) <= room else group_id[: room // 2 - 1] + "…" + group_id[-(room - room // 2) :]
    others = len([m for m in members if m != group_id])
    return f"{name} +{others}" if others else name


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
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.hover = QLabel(" ")
        self.view = pg.GraphicsLayoutWidget()
        self.view.setMinimumSize(220, 160)  # a heatmap narrower than this shows nothing readable
        self.plot = self.view.addPlot(row=0, col=0)
        self.plot.setLabel("bottom", "+ channel")
        self.plot.setLabel("left", "row starts at channel")
        self.plot.invertY(True)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # channel indices, never "(x0.001)"
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        # The channels the current plan removes: a red outline on each cell, above the image.
        self.removed = pg.ScatterPlotItem(
            symbol="s", size=0.86, pxMode=False, pen=pg.mkPen(REMOVED_COLOUR, width=2), brush=None
        )
        self.removed.setZValue(10)
        self.plot.addItem(self.removed)
        self.legend = QLabel(
            f'<span style="color:{REMOVED_COLOUR}">&#9633;</span> red outline: removed by the current plan'
        )
        self.legend.setWordWrap(True)
        self.legend.setVisible(False)
        self.empty = QLabel()  # what to do, in place of an empty plot
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setMinimumSize(220, 160)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"), label="importance")
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        self.strip = pg.GraphicsLayoutWidget()
        self.strip_plot = self.strip.addPlot()
        self.strip_plot.setLabel("left", "group")
        self.strip_plot.setLabel("bottom", "channel")
        for axis in ("left", "bottom"):
            self.strip_plot.getAxis(axis).enableAutoSIPrefix(False)
        cache_axes(self.plot, self.strip_plot)
        # the channel axis is labelled at its two ends, half outside the axis: pyqtgraph hides a label that
        # passes the axis's end by more than this (15 px by default: "2048" on MaxViT's overview was hidden),
        # and the layout keeps that much room on the right so the label is not cut at the widget's edge
        self.strip_plot.getAxis("bottom").setStyle(hideOverlappingLabels=END_LABEL_ROOM)
        left, top, _, bottom = self.strip.ci.layout.getContentsMargins()
        self.strip.ci.layout.setContentsMargins(left, top, END_LABEL_ROOM, bottom)
        self.strip_plot.invertY(True)
        self.strip_image = pg.ImageItem()
        self.strip_image.setColorMap(pg.colormap.get("viridis"))
        self.strip_plot.addItem(self.strip_image)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.view, stretch=3)
        layout.addWidget(self.empty, stretch=3)
        layout.addWidget(self.legend)
        layout.addWidget(self.hover)
        overview = QLabel("Overview: every scored group, one row each (normalised per group)")
        overview.setWordWrap(True)
        layout.addWidget(overview)
        layout.addWidget(self.strip)
        self._values = np.zeros(0)
        self._ticks: dict[tuple[int, str], list | None] = {}  # what each axis was last given (``_set_ticks``)
        self._strip_ids: list[str] = []
        self.plot.scene().sigMouseMoved.connect(self._on_hover)
        self.plot.vb.sigResized.connect(self._label_channels)
        self._members: dict[str, list[str]] = {}
        self.strip_plot.scene().sigMouseClicked.connect(self._on_strip_click)
        self.strip_plot.scene().sigMouseMoved.connect(self._on_strip_hover)
        self.plot.scene().sigMouseClicked.connect(self._on_channel_click)
        self._group_id = ""
        self._removed: list[int] = []
        self.show_group("", None)

    def show_note(self, text: str) -> None:
        """Say what to look at when there is no channel heatmap to draw (block methods)."""
        self.show_group("", None)
        self.title.setText(text)
        self.empty.setText(text)

    def show_group(
        self,
        group_id: str,
        values: np.ndarray | None,
        removed: Sequence[int] = (),
        scored: bool = False,
        changed_by: str = "",
    ) -> None:
        """Draw one group's per-channel importance, outlining the channels in ``removed``; with no values say
        what to do (``scored`` and ``changed_by`` as in ``empty_text``)."""
        self._group_id = group_id
        if values is None or len(values) == 0:
            title, text = empty_text(group_id, scored, changed_by)
            self.title.setText(title)
            self.empty.setText(text)
            self.image.clear()
            self._values = np.zeros(0)
            self._show_removed([])
            self.view.setVisible(False)
            self.empty.setVisible(True)
            return
        self.view.setVisible(True)
        self.empty.setVisible(False)
        self._values = np.asarray(values, dtype=np.float32)
        low, high = float(self._values.min()), float(self._values.max())
        count = len(self._values)
        kept = f"kept {count - len(removed)}/{count}" if removed else f"{count} channels"
        self.title.setText(f"{group_id}: {kept}, importance {low:.3g} … {high:.3g}")
        grid = channel_grid(self._values)
        self.image.setImage(grid, autoLevels=False)
        self.colorbar.setLevels((low, high if high > low else low + 1e-12))
        rows = grid.shape[0]
        self.plot.setRange(xRange=(0, ROW_WIDTH), yRange=(0, rows), padding=0.02)
        self._label_channels()
        step = max(1, math.ceil(rows / 16))
        self._set_ticks(self.plot, "left", [[(r + 0.5, str(r * ROW_WIDTH)) for r in range(0, rows, step)], []])
        self._show_removed([int(c) for c in removed])

    def _set_ticks(self, plot: pg.PlotItem, side: str, ticks: list | None) -> None:
        """Give an axis its ticks only when they change: each call drops the axis's drawn picture, and redrawing
        it (labels, tick lines, text metrics) was 3 of the 8 ms a new score's paint took."""
        key = (id(plot), side)
        if key not in self._ticks or self._ticks[key] != ticks:
            self._ticks[key] = ticks
            plot.getAxis(side).setTicks(ticks)

    def _label_channels(self) -> None:
        """Label every 4th, 8th or 16th channel on the bottom axis, as many as the plot's width has room for."""
        pixels_per_channel = self.plot.vb.width() / ROW_WIDTH
        step = next((s for s in (4, 8) if s * pixels_per_channel >= 28), 16)
        self._set_ticks(self.plot, "bottom", [[(c + 0.5, str(c)) for c in range(0, ROW_WIDTH, step)], []])

    def _show_removed(self, removed: list[int]) -> None:
        self._removed = sorted(removed)
        cells = [(c % ROW_WIDTH + 0.5, c // ROW_WIDTH + 0.5) for c in self._removed]
        if cells:
            self.removed.setData(pos=cells)
        else:
            self.removed.clear()
        self.legend.setVisible(bool(cells))

    def removed_channels(self) -> list[int]:
        """The channels outlined as removed (ascending)."""
        return list(self._removed)

    def show_overview(self, groups: list[tuple[str, np.ndarray]], members: dict[str, list[str]] | None = None) -> None:
        """One row per group, labelled with its layers (every row while they fit); hover names them all, a click
        selects the group (``group_clicked``)."""
        self._strip_ids = [group_id for group_id, _ in groups]
        self._members = {gid: list((members or {}).get(gid, [gid])) for gid in self._strip_ids}
        if groups:
            grid = overview_grid(groups)
            self.strip_image.setImage(grid, levels=(0, 1))
            height = min(STRIP_MAX_PX, STRIP_AXES_PX + LABEL_PX * len(groups))
            self.strip.setFixedHeight(height)  # a row label per row while they fit; the channel heatmap takes the rest
            step = max(1, math.ceil(len(groups) / ((height - STRIP_AXES_PX) // LABEL_PX)))
            labels = [(row + 0.5, row_label(gid, self._members[gid])) for row, gid in enumerate(self._strip_ids)]
            self._set_ticks(self.strip_plot, "left", [labels[::step], []])
            # the ends only: pyqtgraph always draws its major ticks, and a narrow strip overlapped "20 40 60"
            width = grid.shape[1]
            self._set_ticks(self.strip_plot, "bottom", [[(0, "0"), (width, str(width))], []])
            self.strip_plot.setRange(xRange=(0, grid.shape[1]), yRange=(0, len(groups)), padding=0)
        else:
            self.strip_image.clear()
            self._set_ticks(self.strip_plot, "left", None)
            self._set_ticks(self.strip_plot, "bottom", None)
        self.strip.setVisible(bool(groups))  # no empty axes: the label above says what the strip will show

    def _on_hover(self, position: QPointF) -> None:
        if not len(self._values) or not self.plot.sceneBoundingRect().contains(position):
            return
        channel = self._channel_at(position)
        if channel is not None:
            fate = "removed by the plan" if channel in self._removed else "kept"
            self.hover.setText(f"channel {channel}: importance {self._values[channel]:.4g}, {fate}")

    def _channel_at(self, position: QPointF) -> int | None:
        point = self.plot.vb.mapSceneToView(position)
        column, row = math.floor(point.x()), math.floor(point.y())
        channel = row * ROW_WIDTH + column
        return channel if 0 <= column < ROW_WIDTH and 0 <= channel < len(self._values) else None

    def _on_channel_click(self, event) -> None:
        channel = self._channel_at(event.scenePos())
        if channel is not None:
            self.channel_clicked.emit(self._group_id, channel)

    def _strip_row(self, position: QPointF) -> str | None:
        if not self.strip_plot.sceneBoundingRect().contains(position):
            return None
        row = math.floor(self.strip_plot.vb.mapSceneToView(position).y())
        return self._strip_ids[row] if 0 <= row < len(self._strip_ids) else None

    def _on_strip_hover(self, position: QPointF) -> None:
        group = self._strip_row(position)
        if group is not None:
            self.hover.setText(f"overview row {group}: layers {', '.join(self._members[group])} (click to show)")

    def _on_strip_click(self, event) -> None:
        group = self._strip_row(event.scenePos())
        if group is not None:
            self.group_clicked.emit(group)
