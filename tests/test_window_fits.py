"""Defects a person met in the real window: clipped before/after columns, misleading heatmap titles, Run/Apply
below the fold, and an overview row that could not be clicked to its layer."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication
from test_window import TIMEOUT_MS, _open

from secateur.app.heatmap import SELECT_TITLE
from secateur.app.results import MEASURING_NOW
from secateur.app.window import MainWindow

SIZES = ((1024, 700), (1280, 800), (1920, 1080))
CELL_PADDING = 6  # the style's margins around an item's text


def _run(qtbot, window: MainWindow, start) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        start()
    window.draw_now()


def _scored_demo(qtbot, window: MainWindow, method: str = "l1") -> None:
    """The demo, scored; measured on a small test split so an apply takes seconds on a loaded machine."""
    _open(qtbot, window)
    data = window.session.data
    data.test = data.test.subset(list(range(256)))
    window.panel.picker.setCurrentText(method)
    _run(qtbot, window, window.run_method)


def test_before_after_columns_fit_without_scrolling_or_elided_numbers(qtbot, window: MainWindow) -> None:
    _scored_demo(qtbot, window)
    captions: list[str] = []
    window.bridge.changed.connect(lambda names: "model" in names and captions.append(window.results.caption.text()))
    _run(qtbot, window, window.apply_plan)
    assert captions[0] == MEASURING_NOW  # while the pruned model is measured, the caption says so
    assert window.results.cell(2, 2) and window.results.cell(5, 1)  # params after, latency spread before
    for width, height in SIZES:
        window.resize(width, height)
        QApplication.processEvents()
        _assert_columns_fit(window, f"{width}×{height}")
    # A layout saved with a narrow Results dock (what a person met at 1920×1080) is widened to fit the numbers.
    window.resizeDocks([window.docks["results"]], [250], Qt.Orientation.Horizontal)
    QApplication.processEvents()
    assert window.docks["results"].width() > 250
    _assert_columns_fit(window, "a narrow saved dock")


def _assert_columns_fit(window: MainWindow, where: str) -> None:
    """Every column inside the table's viewport, and every number whole (not elided)."""
    table = window.results.table
    header = table.horizontalHeader()
    room = table.viewport().width()
    for column in range(table.columnCount()):
        left, size = header.sectionViewportPosition(column), header.sectionSize(column)
        assert left >= 0 and left + size <= room, (where, column, left, size, room)
        if column == 0:
            continue
        for row in range(table.rowCount()):
            text = window.results.cell(row, column)
            needed = table.fontMetrics().horizontalAdvance(text) + CELL_PADDING
            assert needed <= size, f"{where}: {text!r} needs {needed} px, column {column} has {size}"


def test_heatmap_title_says_what_is_true_and_what_to_do(qtbot, window: MainWindow) -> None:
    _scored_demo(qtbot, window)
    window.tree.setCurrentIndex(window.tree.rootIndex())  # scores, nothing selected
    window.tree.clearSelection()
    window._draw_scores()
    assert window.heatmap.title.text() == SELECT_TITLE
    assert window.select_layer("layer2.0.conv1")
    assert window.heatmap.title.text().startswith("layer2.0.conv1: ") and "importance" in window.heatmap.title.text()
    _run(qtbot, window, window.apply_plan)
    assert window.session.scores is None and window.session.history  # the session drops the pre-apply scores
    title = window.heatmap.title.text()
    assert "Model pruned: run the method again to score the pruned model" in title, title
    assert "no scores yet" not in title and "with l1" in window.heatmap.empty.text()
    _run(qtbot, window, window.undo)
    assert window.heatmap.title.text() == "layer2.0.conv1: no scores yet"  # the model as opened, never scored


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


def draw_specs(axis) -> tuple:
    """What pyqtgraph would paint on ``axis`` now: (axis line, tick lines, labels)."""
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        return axis.generateDrawSpecs(painter)
    finally:
        painter.end()


def _drawn_labels(axis) -> list[str]:
    """The tick labels pyqtgraph would paint on ``axis`` now (it leaves out those it would clip)."""
    return [text for _, _, text in draw_specs(axis)[2]]


def test_overview_rows_are_labelled_and_a_click_selects_the_group(qtbot, window: MainWindow) -> None:
    _scored_demo(qtbot, window)
    QApplication.processEvents()
    heatmap, plot = window.heatmap, window.heatmap.strip_plot
    groups = list(window.session.scores.groups)
    members = {g.id: g.out_layers for g in window.session.tree.groups}
    labels = [label for _, label in plot.getAxis("left")._tickLevels[0]]
    others = {g: len([name for name in members[g] if name != g]) for g in groups}
    assert labels == [f"{g} +{others[g]}" if others[g] else g for g in groups]  # every row, in order
    assert "conv1 +7" in labels  # the stem's group: conv1, bn1 and the six residual outputs it feeds
    width = max(len(values) for values in window.session.scores.groups.values())
    assert plot.getAxis("bottom")._tickLevels == [[(0, "0"), (width, str(width))], []]  # ends only: never overlapping
    assert _drawn_labels(plot.getAxis("bottom")) == ["0", str(width)]
    plot.getAxis("bottom").setTicks([[(0, "0"), (2048, "2048")], []])  # MaxViT's widest group: hidden before
    plot.setRange(xRange=(0, 2048), padding=0)
    assert _drawn_labels(plot.getAxis("bottom")) == ["0", "2048"]
    plot.getAxis("bottom").setTicks([[(0, "0"), (width, str(width))], []])
    plot.setRange(xRange=(0, width), padding=0)
    assert window.select_layer("fc")
    row = groups.index("layer2.1.conv1")
    point = heatmap.strip.mapFromScene(plot.vb.mapViewToScene(QPointF(3.0, row + 0.5)))
    qtbot.mouseMove(heatmap.strip.viewport(), point)
    assert heatmap.hover.text() == "overview row layer2.1.conv1: layers layer2.1.conv1, layer2.1.bn1 (click to show)"
    qtbot.mouseClick(heatmap.strip.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert window._selected_name() == "layer2.1.conv1"
    assert window.tree.selectionModel().isSelected(window.tree.currentIndex())
    assert heatmap.title.text().startswith("layer2.1.conv1: kept ") and "/64," in heatmap.title.text()
    assert heatmap.view.isVisible()


def test_fine_tuning_plots_and_titles_fit_their_view(qtbot, window: MainWindow) -> None:
    """At 1280×800 the plots were wider than their view, both titles cut ("…red: smoothe", "…(calibration sp")."""
    _open(qtbot, window)
    window.tabs.setCurrentWidget(window.training)
    view = window.training
    for width, height in SIZES:
        window.resize(width, height)
        QApplication.processEvents()
        for plot in (view.loss_plot, view.accuracy_plot):
            shown = view.mapFromScene(plot.mapRectToScene(plot.boundingRect())).boundingRect()
            assert shown.left() >= 0 and shown.right() <= view.viewport().width(), (width, shown, view.width())
            title = plot.titleLabel
            needed = title.item.boundingRect().width()
            assert needed <= plot.width(), f"{width}×{height}: {title.text!r} needs {needed:.0f} px, has {plot.width()}"
