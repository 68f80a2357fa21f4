"""Defects a person met in the real window: clipped before/after columns, misleading heatmap titles, Run/Apply
below the fold, and an overview row that could not be clicked to its layer."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QApplication
from test_window import TIMEOUT_MS, _open

from secateur.app.window import MainWindow

SIZES = ((1024, 700), (1280, 800), (1920, 1080))
CELL_PADDING = 6  # the style's margins around an item's text


def _run(qtbot, window: MainWindow, start) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        start()
    window.bridge.flush()


def _scored_demo(qtbot, window: MainWindow, method: str = "l1") -> None:
    """The demo, scored; measured on a small test split so an apply takes seconds on a loaded machine."""
    _open(qtbot, window)
    data = window.session.data
    data.test = data.test.subset(list(range(256)))
    window.panel.picker.setCurrentText(method)
    _run(qtbot, window, window.run_method)


def test_before_after_columns_fit_without_scrolling_or_elided_numbers(qtbot, window: MainWindow) -> None:
    _scored_demo(qtbot, window)
    _run(qtbot, window, window.apply_plan)
    table = window.results.table
    header = table.horizontalHeader()
    assert window.results.cell(2, 2) and window.results.cell(5, 1)  # params after, latency spread before
    for width, height in SIZES:
        window.resize(width, height)
        QApplication.processEvents()
        QApplication.processEvents()
        room = table.viewport().width()
        assert not table.horizontalScrollBar().isVisible() or table.horizontalScrollBar().maximum() == 0
        for column in range(table.columnCount()):
            left, size = header.sectionViewportPosition(column), header.sectionSize(column)
            assert left >= 0 and left + size <= room, (width, column, left, size, room)
            if column == 0:
                continue
            for row in range(table.rowCount()):
                text = window.results.cell(row, column)
                needed = table.fontMetrics().horizontalAdvance(text) + CELL_PADDING
                assert needed <= size, f"at {width}×{height} {text!r} needs {needed} px, column {column} has {size}"


def test_action_buttons_stay_in_view_and_in_place_for_every_method(qtbot, window: MainWindow) -> None:
    window.resize(1024, 700)
    frame = QRect(QPoint(0, 0), window.size())
    seen: dict[str, set[tuple[int, int]]] = {}
    methods = sorted(window.registry.methods)
    assert "pxp" in methods and "l1" in methods
    for method in methods:
        window.panel.picker.setCurrentText(method)
        QApplication.processEvents()
        for button in window.panel.action_buttons():
            rect = QRect(button.mapTo(window, QPoint(0, 0)), button.size())
            assert button.isVisible() and frame.contains(rect), (method, button.text(), rect.getRect())
            assert button.visibleRegion().boundingRect() == button.rect(), (method, button.text())  # not scrolled off
            seen.setdefault(button.text(), set()).add(rect.topLeft().toTuple())
    assert all(len(places) == 1 for places in seen.values()), seen  # the form's length never moves them
