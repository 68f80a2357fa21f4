"""One channel's LRP relevance map over a reference image, beside the image: what the channel responds to.

The view only collects the choice (layer, channel, image) and draws results;
the computation (canonisation and LRP, in ``core.lrp.explain_channel``) runs
as a job on the window's worker, never on the Qt thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget
from torch import nn

from secateur.core.data.loading import DataBundle
from secateur.core.explain.lrp import ChannelExplanation, explain_channel

Source = tuple[nn.Module, DataBundle | None, torch.device]


def explainable_layers(model: nn.Module) -> dict[str, int]:
    """Conv and linear layers by name, with their number of output channels."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            layers[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            layers[name] = module.out_features
    return layers


class ChannelRelevanceView(QWidget):
    """Layer and channel (picked here or by clicking the heatmap), a training image, and the two images."""

    job_requested = Signal(str, object, object)  # job name, job(progress), on_success

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layer = QComboBox()
        self.channel = QSpinBox()
        self.image_index = QSpinBox()
        self.show_button = QPushButton("Explain")
        self.show_button.setEnabled(False)
        self.caption = QLabel("Open a model with data, pick a layer and a channel (or click one in the heatmap).")
        self.caption.setWordWrap(True)
        # Long layer names must not widen the window: the combo shows a few characters and elides.
        self.layer.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.layer.setMinimumContentsLength(10)
        controls = QVBoxLayout()
        layer_row, channel_row = QHBoxLayout(), QHBoxLayout()
        layer_row.addWidget(QLabel("layer"))
        layer_row.addWidget(self.layer, stretch=1)
        for label, widget in (("channel", self.channel), ("image", self.image_index)):
            channel_row.addWidget(QLabel(label))
            channel_row.addWidget(widget, stretch=1)
        channel_row.addWidget(self.show_button)
        controls.addLayout(layer_row)
        controls.addLayout(channel_row)
        self.view = pg.GraphicsLayoutWidget()
        self.image_plot = self.view.addPlot(row=0, col=0, title="image")
        self.map_plot = self.view.addPlot(row=0, col=1, title="channel relevance")
        for plot in (self.image_plot, self.map_plot):
            plot.invertY(True)
            plot.setAspectLocked(True)
            plot.hideAxis("left")
            plot.hideAxis("bottom")
        self.map_plot.setXLink(self.image_plot)
        self.map_plot.setYLink(self.image_plot)
        self.image_item = pg.ImageItem()
        self.map_item = pg.ImageItem()
        self.image_plot.addItem(self.image_item)
        self.map_plot.addItem(self.map_item)
        self.colorbar = pg.ColorBarItem(values=(-1, 1), colorMap=pg.colormap.get("CET-D1"), label="relevance")
        self.colorbar.setImageItem(self.map_item, insert_in=self.map_plot)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(controls)
        layout.addWidget(self.view, stretch=1)
        layout.addWidget(self.caption)
        self._source: Callable[[], Source | None] | None = None
        self._layers: dict[str, int] = {}
        self.layer.currentTextChanged.connect(self._layer_changed)
        self.show_button.clicked.connect(self.request)

    def set_source(self, source: Callable[[], Source | None]) -> None:
        """Where the current model, data and device come from (they change with apply and undo)."""
        self._source = source
        self.refresh()

    def refresh(self) -> None:
        """Re-read the model: the layer list follows it."""
        current = self._source() if self._source is not None else None
        model, data, _ = current if current is not None else (None, None, None)
        layers = explainable_layers(model) if model is not None else {}
        if layers != self._layers:
            self._layers = layers
            self.layer.blockSignals(True)
            self.layer.clear()
            self.layer.addItems(list(layers))
            self.layer.blockSignals(False)
            self._layer_changed(self.layer.currentText())
        self.image_index.setMaximum(max(0, len(data.train) - 1) if data is not None else 0)
        self.show_button.setEnabled(data is not None and bool(layers))

    def showEvent(self, event: Any) -> None:
        self.refresh()
        super().showEvent(event)

    def select(self, layer: str, channel: int) -> bool:
        """Pick a layer and channel (from the heatmap); False when the layer is not a conv or linear layer."""
        self.refresh()
        if layer not in self._layers:
            return False
        self.layer.setCurrentText(layer)
        self.channel.setValue(channel)
        return True

    def _layer_changed(self, layer: str) -> None:
        self.channel.setMaximum(max(0, self._layers.get(layer, 1) - 1))

    def request(self) -> None:
        """Ask the window to run the explanation on its worker."""
        current = self._source() if self._source is not None else None
        if current is None or current[1] is None:
            return
        model, data, device = current
        layer, channel, index = self.layer.currentText(), self.channel.value(), self.image_index.value()

        def job(progress: Any) -> ChannelExplanation:
            progress("channel relevance", 0, 1)
            result = explain_channel(model, data, index, layer, channel, device)
            progress("channel relevance", 1, 1)
            return result

        self.job_requested.emit(f"relevance of {layer} channel {channel}", job, self.show_explanation)

    def show_explanation(self, result: ChannelExplanation) -> None:
        self.image_item.setImage(result.image, levels=(0, 1))
        bound = float(np.abs(result.relevance).max()) or 1e-12
        self.map_item.setImage(result.relevance, autoLevels=False)
        self.colorbar.setLevels((-bound, bound))
        self.image_plot.autoRange(padding=0)
        self.caption.setText(
            f"{result.layer}, channel {result.channel}: relevance for the true class '{result.class_name}' "
            f"through this channel (ε rule; red for, blue against; {result.relevance.sum():.3g} of the class's 1)"
        )
