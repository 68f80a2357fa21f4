"""The window fits the work: nothing clipped at common sizes, panes persist, messages elide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QRect, QSettings, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QApplication, QDockWidget, QWidget

from secateur.app.window import MainWindow

TIMEOUT_MS = 600_000
SIZES = ((1024, 700), (1280, 800), (1920, 1080))


def _inside_a_scroll_area(widget: QWidget) -> bool:
    """A scroll area places its own header, bars and viewport, and what is on the viewport is scrolled to, not
    clipped: only the scroll area itself is checked. A spin box, likewise, sizes its own line edit (a pixel or
    three under that line edit's hint in every style): only the spin box is checked."""
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, (QAbstractScrollArea, QAbstractSpinBox)):
            return True
        parent = parent.parentWidget()
    return False


def _behind_another_tab(widget: QWidget, window: MainWindow) -> bool:
    """Qt parks a tabbed dock that is not the current tab outside the window: it is not clipped, only hidden."""
    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget is not None and bool(window.tabifiedDockWidgets(widget)) and widget.visibleRegion().isEmpty()


def clipped(window: MainWindow) -> list[str]:
    """Every visible widget that sticks out of the window or is smaller than its minimum size hint."""
    frame = QRect(QPoint(0, 0), window.size())
    problems = []
    for widget in window.findChildren(QWidget):
        if not widget.isVisible() or widget.window() is not window or _inside_a_scroll_area(widget):
            continue
        if _behind_another_tab(widget, window):
            continue
        rect = QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())
        hint = widget.minimumSizeHint()
        name = f"{type(widget).__name__} {widget.objectName()!r} {rect.getRect()}"
        if not frame.contains(rect):
            problems.append(f"{name} outside the window {frame.getRect()}")
        if hint.isValid() and (rect.width() < hint.width() or rect.height() < hint.height()):
            problems.append(f"{name} smaller than its minimum size hint {hint.toTuple()}")
    return problems


@pytest.mark.parametrize("method", ["l1", "pxp"])
def test_nothing_is_clipped_at_common_sizes(qtbot, window: MainWindow, method: str) -> None:
    window.panel.picker.setCurrentText(method)
    for width, height in SIZES:
        window.resize(width, height)
        QApplication.processEvents()
        assert (window.width(), window.height()) == (width, height), "the window refused the size"
        for front in ("compare", "layers"):  # the two tabs of the left column, each in front once
            window.docks[front].raise_()
            QApplication.processEvents()
            problems = clipped(window)
            assert problems == [], f"at {width}×{height} with {method}, {front} in front: " + "\n".join(problems)


def test_tree_keeps_kept_and_importance_in_view_and_elides_names(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo", "demo")
    window.tree.expandAll()
    header = window.tree.header()
    for width, height in SIZES:
        window.resize(width, height)
        QApplication.processEvents()
        room = window.tree.viewport().width()
        for column in (5, 6):  # kept, importance
            left, size = header.sectionViewportPosition(column), header.sectionSize(column)
            assert left >= 0 and left + size <= room, (width, column, left, size, room)
        assert header.sectionViewportPosition(0) == 0 and header.sectionSize(0) >= 90


def test_dock_layout_persists_and_resets(qtbot, tmp_path) -> None:
    settings = QSettings(str(tmp_path / "layout.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings=settings)
    qtbot.addWidget(first)
    first.resize(1280, 800)
    first.show()
    QApplication.processEvents()
    shipped = first.docks["layers"].width()
    first.resizeDocks([first.docks["layers"]], [300], Qt.Orientation.Horizontal)
    first.docks["results"].hide()
    QApplication.processEvents()
    assert first.docks["layers"].width() != shipped
    first.close()
    second = MainWindow(settings=settings)
    qtbot.addWidget(second)
    second.resize(1280, 800)
    second.show()
    QApplication.processEvents()
    assert second.docks["layers"].width() == first.docks["layers"].width()
    assert not second.docks["results"].isVisible()
    second.docks.reset()
    QApplication.processEvents()
    assert second.docks["results"].isVisible() and abs(second.docks["layers"].width() - shipped) <= 8
    assert settings.value("layout/state") is None


def test_status_messages_elide_with_the_whole_text_as_tooltip(qtbot, window: MainWindow) -> None:
    window.resize(1024, 700)
    text = "opened demo: " + "the previous model's scores, plan, heatmaps and results were cleared " * 4
    window.statusBar().showMessage(text)
    QApplication.processEvents()
    label = window.statusBar().message
    assert window.statusBar().currentMessage() == text and label.toolTip() == text
    assert label.text().endswith("…") and label.fontMetrics().horizontalAdvance(label.text()) <= label.width()
    assert label.geometry().right() < window.device_picker.geometry().left()


def test_heatmap_outlines_exactly_the_channels_the_plan_removes(qtbot, window: MainWindow) -> None:
    assert window.heatmap.empty.isVisible() and not window.heatmap.view.isVisible()
    assert "Run a method" in window.heatmap.empty.text()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    window.panel.picker.setCurrentText("l1")
    window.panel.target_value.setValue(0.4)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    assert window.select_layer("features.3")
    group = window.tree_model.group_of("features.3")
    planned = window.session.plan.groups[group]
    scores = window.session.scores.groups[group]
    lowest = sorted(range(planned.total), key=lambda c: float(scores[c]))[: len(planned.removed)]
    assert window.heatmap.removed_channels() == planned.removed == sorted(lowest)  # l1 drops the smallest
    xs, ys = window.heatmap.removed.getData()
    cells = {(round(x - 0.5), round(y - 0.5)) for x, y in zip(xs, ys, strict=True)}
    assert cells == {(c % 32, c // 32) for c in planned.removed}
    assert f"kept {len(planned.kept)}/{planned.total}" in window.heatmap.title.text()
    assert window.heatmap.legend.isVisible() and window.heatmap.view.isVisible()
    window.panel.target_value.setValue(0.1)  # a new target: the preview's plan, and the outline with it
    # the preview runs on the worker (debounced): wait for its plan, not for a signal that may have gone by
    qtbot.waitUntil(lambda: len(window.session.plan.groups[group].removed) < len(lowest), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: window.heatmap.removed_channels() == window.session.plan.groups[group].removed)
    assert f"kept {len(window.session.plan.groups[group].kept)}/32" in window.heatmap.title.text()
    left_ticks = window.heatmap.plot.getAxis("left")._tickLevels[0]
    assert [label for _, label in left_ticks][:1] == ["0"]  # rows are labelled by their first channel


_HIGH_DPI_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from test_window_layout import clipped
from secateur.app.window import MainWindow
window = MainWindow(settings=QSettings(sys.argv[2], QSettings.Format.IniFormat))
window.resize(1920, 1080)  # logical pixels: 3840×2160 on the screen at 2×
window.show()
for front in ("compare", "layers"):
    window.docks[front].raise_()
    app.processEvents()
    problems = clipped(window)
    assert problems == [], "\\n".join(problems)
print("ratio", window.devicePixelRatio(), "physical", window.width() * window.devicePixelRatio(), flush=True)
"""


def test_nothing_is_clipped_at_4k_with_2x_scaling(tmp_path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": "2"}
    tests = str(Path(__file__).parent)
    run = subprocess.run([sys.executable, "-c", _HIGH_DPI_PROBE, tests, str(tmp_path / "layout.ini")],
                         capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ratio 2.0 physical 3840.0" in run.stdout
