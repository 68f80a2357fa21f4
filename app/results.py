"""The before/after table: the session's measurements of the model as opened and of the current one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from secateur.app.report import human_count
from secateur.core.train.evaluate import Metrics

HEADER = ("", "before", "after", "Δ", "%")
MEASURING = "measuring…"


@dataclass(frozen=True)
class Side:
    """One column: full measurements when there are any, else the size read from the layer tree."""

    metrics: Metrics | None
    params: int | None
    macs: int | None


def _latency(m: Metrics) -> str:
    return f"{m.latency.median:.2f} ({m.latency.p10:.2f}–{m.latency.p90:.2f})"


def _signed(value: float, fmt: Callable[[float], str]) -> str:
    return ("+" if value > 0 else "") + fmt(value)


def _row(label: str, before: float | None, after: float | None, text: Callable[[float], str]) -> list[str]:
    if before is None or after is None:
        return [label, "—" if before is None else text(before), "" if after is None else text(after), "", ""]
    percent = f"{100.0 * (after - before) / before:+.1f}" if before else ""
    return [label, text(before), text(after), _signed(after - before, text), percent]


def metric_rows(before: Side, after: Side, pending: str = "—") -> list[list[str]]:
    """The table's rows: accuracy, loss, params, MACs, latency; ``pending`` where a number is not measured yet."""
    mb, ma = before.metrics, after.metrics
    rows = [
        _row("accuracy %", mb and mb.accuracy, ma and ma.accuracy, lambda v: f"{v:.2f}"),
        _row("loss", mb and mb.loss, ma and ma.loss, lambda v: f"{v:.4f}"),
        _row("params", mb.params if mb else before.params, ma.params if ma else after.params, human_count),
        _row("MACs", mb.macs if mb else before.macs, ma.macs if ma else after.macs, human_count),
        _row("latency ms", mb and mb.latency.median, ma and ma.latency.median, lambda v: f"{v:.2f}"),
    ]
    if mb is not None:
        rows[4][1] = _latency(mb)
    if ma is not None:
        rows[4][2] = _latency(ma)
    for row in (rows[0], rows[1], rows[4]):
        row[2] = row[2] or pending
    return rows


def caption(before: Metrics | None, after: Metrics | None) -> str:
    """Which split and how many samples, and how latency was measured."""
    shown = after or before
    if shown is None:
        return "Not measured yet: apply, fine-tune or press Measure again."
    latency = shown.latency
    return (
        f"{shown.split} split, {shown.samples} samples · latency: median (p10–p90) of {latency.runs} runs "
        f"after warm-up, batch {latency.batch_size}, {latency.device}"
    )


class ResultsView(QWidget):
    """Caption, table and a "Measure again" button that asks for the latency to be measured anew."""

    measure_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel(caption(None, None))
        self.caption.setWordWrap(True)
        self.table = QTableWidget(0, len(HEADER))
        self.table.setHorizontalHeaderLabels(list(HEADER))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.measure_button = QPushButton("Measure again")
        self.measure_button.setToolTip("measure accuracy if needed, and latency again (warm-up first) on the worker")
        self.measure_button.clicked.connect(self.measure_requested)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.measure_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.caption)
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(buttons)

    def show_rows(self, rows: list[list[str]], text: str) -> None:
        self.caption.setText(text)
        self.table.setRowCount(len(rows))
        for row, cells in enumerate(rows):
            for column, cell in enumerate(cells):
                item = QTableWidgetItem(cell)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)

    def cell(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""
