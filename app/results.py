"""The before/after table: the session's measurements of the model as opened and of the current one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QSize, Qt, Signal
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
MEASURING_NOW = "Measuring… (accuracy and loss, then latency)"
SPREAD = "latency p10–p90"
# Typical widest cells: the dock is as wide before the first measurement as after, and grows only past them.
TYPICAL = ("", "88.88–888.88", "88.88–888.88", "-888.88 k", "-88.8")
LABEL_ROOM = "accuracy %"  # the metric column is at least this wide; longer names elide (full name in the tooltip)


@dataclass(frozen=True)
class Side:
    """One column: full measurements when there are any, else the size read from the layer tree."""

    metrics: Metrics | None
    params: int | None
    macs: int | None


def _spread(m: Metrics) -> str:
    return f"{m.latency.p10:.2f}–{m.latency.p90:.2f}"


def _signed(value: float, fmt: Callable[[float], str]) -> str:
    return ("+" if value > 0 else "") + fmt(value)


def _row(
    label: str, before: float | None, after: float | None, text: Callable[[float], str], relative: bool = True
) -> list[str]:
    """A metric's row; ``relative`` False leaves % empty (a loss near 0 made it a six-digit number)."""
    if before is None or after is None:
        return [label, "—" if before is None else text(before), "" if after is None else text(after), "", ""]
    percent = f"{100.0 * (after - before) / before:+.1f}" if before and relative else ""
    return [label, text(before), text(after), _signed(after - before, text), percent]


def metric_rows(before: Side, after: Side, pending: str = "—") -> list[list[str]]:
    """Rows for accuracy, loss, params, MACs, latency median and spread; ``pending`` where not measured yet."""
    mb, ma = before.metrics, after.metrics
    rows = [
        _row("accuracy %", mb and mb.accuracy, ma and ma.accuracy, lambda v: f"{v:.2f}"),
        _row("loss", mb and mb.loss, ma and ma.loss, lambda v: f"{v:.4f}", relative=False),
        _row("params", mb.params if mb else before.params, ma.params if ma else after.params, human_count),
        _row("MACs", mb.macs if mb else before.macs, ma.macs if ma else after.macs, human_count),
        _row("latency ms", mb and mb.latency.median, ma and ma.latency.median, lambda v: f"{v:.2f}"),
        # The spread gets a row of its own: "median (p10–p90)" in one cell made the columns too wide to fit.
        [SPREAD, _spread(mb) if mb else "—", _spread(ma) if ma else "", "", ""],
    ]
    for row in (rows[0], rows[1], rows[4], rows[5]):
        row[2] = row[2] or pending
    return rows


def caption(before: Metrics | None, after: Metrics | None, measuring: bool = False) -> str:
    """Which split and how many samples, and how latency was measured (or that a job is measuring)."""
    shown = after or before
    if shown is None:
        return MEASURING_NOW if measuring else "Not measured yet: apply, fine-tune or press Measure again."
    latency = shown.latency
    return (
        f"{shown.split} split, {shown.samples} samples · latency: median and p10–p90 of {latency.runs} runs "
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
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # sized by _fit_numbers: never elided
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the names take what is left
        header.setMinimumSectionSize(24)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setWordWrap(False)  # a long metric name elides on one line (tooltip: the whole name)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the dock is made wide enough
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
        self._fit_numbers()

    def show_rows(self, rows: list[list[str]], text: str) -> None:
        self.caption.setText(text)
        self.table.setRowCount(len(rows))
        for row, cells in enumerate(rows):
            for column, cell in enumerate(cells):
                item = QTableWidgetItem(cell)
                item.setToolTip(cell)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self._fit_numbers()

    def _fit_numbers(self) -> None:
        """Each number column as wide as its widest cell, and at least a typical number (a steady layout)."""
        table, header = self.table, self.table.horizontalHeader()
        for column in range(1, len(HEADER)):
            typical = table.fontMetrics().horizontalAdvance(TYPICAL[column]) + 12
            header.resizeSection(column, max(table.sizeHintForColumn(column), header.sectionSizeHint(column), typical))
        self.updateGeometry()  # new widths: the dock follows minimumSizeHint

    def minimumSizeHint(self) -> QSize:
        """Wide enough for every number column and a short metric name, so nothing needs horizontal scrolling."""
        table, header = self.table, self.table.horizontalHeader()
        numbers = sum(header.sectionSize(column) for column in range(1, len(HEADER)))
        name = table.fontMetrics().horizontalAdvance(LABEL_ROOM) + 12
        scrollbar = table.verticalScrollBar().sizeHint().width()  # counted even when hidden: it may appear
        margins = self.layout().contentsMargins()
        width = numbers + name + scrollbar + 2 * table.frameWidth() + margins.left() + margins.right()
        return QSize(max(width, super().minimumSizeHint().width()), super().minimumSizeHint().height())

    def cell(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""
