"""The fine-tuning plot: every point in view, on axes that stay put while the curve grows (cheap redraws)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QGraphicsItem
from test_window_fits import _drawn_labels, draw_specs

from secateur.app.plot_cache import AXES
from secateur.app.plot_grid import TickGrid
from secateur.app.training_view import TrainingView, grown_range, nice_step
from secateur.core.train.finetune import EpochRecord
from secateur.core.workflow.session import TrainingLog


def test_grown_range_rounds_out_and_never_shrinks() -> None:
    assert grown_range(None, 0.3, 2.7, 0.5) == (0.0, 3.0)
    assert grown_range((0.0, 3.0), 0.2, 1.0, 0.5) == (0.0, 3.0)  # data inside: the range stays
    assert grown_range((0.0, 3.0), 0.2, 3.2, 0.5) == (0.0, 3.5)
    assert grown_range(None, 2.0, 2.0, 0.5) == (2.0, 2.5)  # one value still gets a range
    assert grown_range(None, 100.0, 100.0, 5.0, ceiling=100.0) == (95.0, 100.0)  # never above 100 %
    assert grown_range(None, 91.0, 99.0, 5.0, ceiling=100.0) == (90.0, 100.0)


def test_loss_axis_step_follows_the_loss_magnitude() -> None:
    assert nice_step(2.3) == 0.5 and nice_step(0.003) == pytest.approx(0.0005) and nice_step(0.0) == 0.5


def _inside(view_range: list[float], values: list[float]) -> bool:
    return all(view_range[0] <= v <= view_range[1] for v in values)


def test_plot_holds_every_point_and_keeps_its_axes_while_loss_falls(qtbot) -> None:
    view = TrainingView()
    qtbot.addWidget(view)
    log = TrainingLog(steps_per_epoch=10, total_steps=30)
    log.steps = [(step, 2.3 - 0.05 * step) for step in range(1, 11)]
    log.epochs = [EpochRecord(epoch=1, train_loss=1.9, val_accuracy=61.0, val_loss=1.2)]
    view.show_log(log)
    x_range, loss_range = view.loss_plot.viewRange()
    assert x_range[0] <= 0 and x_range[1] == pytest.approx(3.0, abs=0.2)  # the planned 3 epochs from the start
    assert _inside(loss_range, [loss for _, loss in log.steps])
    assert _inside(view.accuracy_plot.viewRange()[1], [61.0])
    log.steps += [(step, 1.8 - 0.02 * step) for step in range(11, 21)]
    log.epochs.append(EpochRecord(epoch=2, train_loss=1.5, val_accuracy=63.0, val_loss=1.1))
    view.show_log(log)
    assert view.loss_plot.viewRange() == [x_range, loss_range]  # falling loss: no axis moved
    log.epochs.append(EpochRecord(epoch=3, train_loss=1.0, val_accuracy=88.0, val_loss=0.6))
    view.show_log(log)
    assert _inside(view.accuracy_plot.viewRange()[1], [61.0, 63.0, 88.0])  # a point outside grows the axis
    view.show_log(TrainingLog())
    view.show_log(TrainingLog(steps_per_epoch=5, total_steps=5, steps=[(1, 9.0)]))
    assert _inside(view.loss_plot.viewRange()[1], [9.0]) and view.loss_plot.viewRange()[0][1] < 1.5  # a new run
    view.show_log(TrainingLog())
    tiny = TrainingLog(steps_per_epoch=5, total_steps=10, steps=[(step, 0.003) for step in range(1, 6)])
    tiny.epochs = [EpochRecord(epoch=1, train_loss=0.003, val_accuracy=100.0, val_loss=0.001)]
    view.show_log(tiny)
    loss_low, loss_high = view.loss_plot.viewRange()[1]
    assert loss_high < 0.01 and _inside([loss_low, loss_high], [0.003])  # a small loss is not drawn on the floor
    accuracy_low, accuracy_high = view.accuracy_plot.viewRange()[1]
    assert accuracy_high < 101 and accuracy_low < 100  # 100 % sits inside the axis, which stops near 100


def test_a_new_run_sets_its_epochs_axis_before_the_first_step(qtbot) -> None:
    """Each axis whose range moves repaints its labels, a frame's time on the Qt thread while the worker trains:
    the epochs are known at the start, so the first loss moves the loss axis alone."""
    view = TrainingView()
    qtbot.addWidget(view)
    view.show_log(TrainingLog(planned_epochs=3))
    x_range = view.loss_plot.viewRange()[0]
    assert x_range[0] <= 0 and x_range[1] == pytest.approx(3.0, abs=0.2)
    assert _inside(view.accuracy_plot.viewRange()[1], [0.0, 100.0])  # percent, not pyqtgraph's 0–1
    view.show_log(TrainingLog(steps_per_epoch=10, total_steps=30, planned_epochs=3, steps=[(1, 2.3)]))
    assert view.loss_plot.viewRange()[0] == x_range and _inside(view.loss_plot.viewRange()[1], [2.3])
    first = TrainingLog(steps_per_epoch=10, total_steps=30, planned_epochs=3, steps=[(1, 2.3)])
    first.epochs = [EpochRecord(epoch=1, train_loss=1.9, val_accuracy=61.0, val_loss=1.2)]
    view.show_log(first)
    low, high = view.accuracy_plot.viewRange()[1]
    assert 50 < low <= 61 <= high < 70  # the first accuracy sets the axis's own range


def _pixels(view: TrainingView) -> np.ndarray:
    image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 4].reshape(image.height(), image.width(), 4)[..., :3].astype(int)


def test_cached_axes_draw_what_uncached_axes_draw_as_the_ranges_grow(qtbot) -> None:
    """The axes are painted from a pixmap cache (cheap frames); after every change they show the new ticks.

    An axis whose cache missed an invalidation would keep the old tick labels:
    thousands of pixels apart from a view without the cache (one antialiased
    pixel differs where a label's edge meets the border).
    """
    cached, plain = TrainingView(), TrainingView()
    for view in (cached, plain):
        qtbot.addWidget(view)
        view.resize(400, 420)
        view.show()
    for plot in (plain.loss_plot, plain.accuracy_plot):
        for name in AXES:
            assert plot.getAxis(name).cacheMode() == QGraphicsItem.CacheMode.DeviceCoordinateCache
            plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.NoCache)
    log = TrainingLog(steps_per_epoch=10, total_steps=20)
    for step, loss in [(1, 0.4), (2, 0.3), (3, 2.6), (4, 9.0)]:  # the loss axis grows twice
        log.steps.append((step, loss))
        if step == 3:
            log.epochs.append(EpochRecord(epoch=1, train_loss=1.0, val_accuracy=42.0, val_loss=1.0))
        for view in (cached, plain):
            view.show_log(log)
        QApplication.processEvents()
        differing = np.count_nonzero(np.abs(_pixels(cached) - _pixels(plain)).max(axis=2))
        assert differing <= 4, f"after step {step}: {differing} pixels differ"


def _drawn_lines(axis) -> int:
    return len(draw_specs(axis)[1])


def test_the_axes_tick_their_labels_and_one_level_between_with_every_label(qtbot) -> None:
    """pyqtgraph's third tick level drew most of the grid's lines (each with its own pen), faint to invisible;
    the grid item draws at the axes' levels, so two levels here are two levels of grid."""
    ours, default = TrainingView(), TrainingView()
    for view in (ours, default):
        qtbot.addWidget(view)
        view.resize(420, 560)
        view.show()
        log = TrainingLog(steps_per_epoch=10, total_steps=70)
        log.steps = [(step, 4.0 / step) for step in range(1, 71)]
        log.epochs = [EpochRecord(epoch=e, train_loss=1.0, val_accuracy=40.0 + e, val_loss=1.0) for e in range(1, 8)]
        view.show_log(log)
    axes = [plot.getAxis(name) for plot in (ours.loss_plot, ours.accuracy_plot) for name in AXES]
    defaults = [plot.getAxis(name) for plot in (default.loss_plot, default.accuracy_plot) for name in AXES]
    for axis in defaults:
        axis.setStyle(maxTickLevel=2)  # pyqtgraph's own
    QApplication.processEvents()
    for axis, reference in zip(axes, defaults, strict=True):
        labels = _drawn_labels(axis)
        assert labels == _drawn_labels(reference) and labels
        lines = _drawn_lines(axis)
        assert len(labels) <= lines <= 3 * len(labels) and 3 * lines < _drawn_lines(reference), (labels, lines)


@pytest.mark.parametrize("epochs", [1, 3, 12])
def test_the_last_epoch_is_labelled_on_both_plots(qtbot, epochs: int) -> None:
    """With a grid, pyqtgraph hides a label passing its axis's end: a one-epoch run's "1" was never shown."""
    view = TrainingView()
    qtbot.addWidget(view)
    view.resize(400, 420)
    view.show()
    log = TrainingLog(steps_per_epoch=10, total_steps=10 * epochs)
    log.steps = [(step, 1.0) for step in range(1, 10 * epochs + 1)]
    log.epochs = [EpochRecord(epoch=e, train_loss=1.0, val_accuracy=80.0, val_loss=1.0) for e in range(1, epochs + 1)]
    view.show_log(log)
    QApplication.processEvents()
    for plot in (view.loss_plot, view.accuracy_plot):
        labels = _drawn_labels(plot.getAxis("bottom"))
        assert any(float(label) == epochs for label in labels), (epochs, labels)


def test_the_value_axes_keep_one_width_as_their_labels_change(qtbot) -> None:
    """pyqtgraph shrank an axis to its labels after painting them ("100" → "12"), laying the plot out again."""
    view = TrainingView()
    qtbot.addWidget(view)
    view.resize(420, 560)
    view.show()
    log = TrainingLog(planned_epochs=2)
    view.show_log(log)
    QApplication.processEvents()
    view.grab()  # painted: pyqtgraph measures its labels when it paints them
    widths = {plot.getAxis("left").width() for plot in (view.loss_plot, view.accuracy_plot)}
    log.steps_per_epoch, log.total_steps = 10, 20
    log.steps = [(step, 0.001 * step) for step in range(1, 11)]
    log.epochs = [EpochRecord(epoch=1, train_loss=1.0, val_accuracy=12.5, val_loss=1.0)]
    view.show_log(log)
    QApplication.processEvents()
    view.grab()
    assert _drawn_labels(view.accuracy_plot.getAxis("left"))[0] != "0"  # the labels did change
    after = {plot.getAxis("left").width() for plot in (view.loss_plot, view.accuracy_plot)}
    assert len(widths) == 1 and after == widths  # one width for both, unchanged


@pytest.mark.parametrize("accuracies", [[10.0, 40.0], [60.0, 100.0]])
def test_accuracy_markers_are_drawn_whole_inside_the_plot(qtbot, accuracies: list[float]) -> None:
    """A marker at a multiple of 5 (or at 100 %) sat on the axis's rounded end, half outside the plot."""
    view = TrainingView()
    qtbot.addWidget(view)
    view.resize(420, 560)
    view.show()
    log = TrainingLog(steps_per_epoch=10, total_steps=20, steps=[(1, 1.0)])
    log.epochs = [EpochRecord(epoch=e, train_loss=1, val_accuracy=a, val_loss=1) for e, a in enumerate(accuracies, 1)]
    view.show_log(log)
    QApplication.processEvents()
    box = view.accuracy_plot.vb
    radius = view.accuracy.opts["symbolSize"] / 2
    for value in (min(accuracies), max(accuracies)):
        y = box.mapViewToScene(pg.Point(1.0, value)).y()
        top, bottom = box.mapViewToScene(pg.Point(1.0, box.viewRange()[1][1])).y(), box.sceneBoundingRect().bottom()
        assert top + radius <= y <= bottom - radius, (value, top, y, bottom)


def test_the_first_loss_is_drawn_as_a_dot_until_there_is_a_line(qtbot) -> None:
    """A line through one point draws nothing: a run's first step left the loss plot empty."""
    view = TrainingView()
    qtbot.addWidget(view)
    view.resize(420, 560)
    view.show()
    red = np.array([0x2B, 0x39, 0xC0])  # as _pixels reads it: blue, green, red

    def red_pixels() -> int:
        QApplication.processEvents()
        return int(np.count_nonzero(np.abs(_pixels(view) - red).max(axis=2) < 40))

    log = TrainingLog(steps_per_epoch=10, total_steps=20, steps=[(1, 1.0)])
    view.show_log(log)
    assert red_pixels() > 10
    log.steps.append((2, 0.9))
    view.show_log(log)
    assert view.smooth.opts["symbol"] is None and red_pixels() > 10  # a line now, no dots


def test_the_grid_is_one_item_with_lines_at_the_axes_ticks_and_the_axes_stay_strips(qtbot) -> None:
    """A grid drawn by the axes made each axis cover its plot: four plot-sized pixmaps to fill on a first paint."""
    view = TrainingView()
    qtbot.addWidget(view)
    view.resize(420, 560)
    view.show()
    log = TrainingLog(steps_per_epoch=10, total_steps=30)
    log.steps = [(step, 2.0 / step) for step in range(1, 11)]
    log.epochs = [EpochRecord(epoch=1, train_loss=1.0, val_accuracy=61.0, val_loss=1.0)]
    view.show_log(log)
    QApplication.processEvents()
    pixels = _pixels(view)
    for plot in (view.loss_plot, view.accuracy_plot):
        (grid,) = [item for item in plot.items if isinstance(item, TickGrid)]
        box = plot.getViewBox().sceneBoundingRect()
        for name in AXES:
            axis = plot.getAxis(name)
            strip = axis.mapRectToScene(axis.boundingRect())
            assert strip.width() * strip.height() < 0.25 * box.width() * box.height(), name  # beside, not over
            values = grid.tick_values()[name]
            labels = {round(float(text), 6) for text in _drawn_labels(axis)}
            assert {round(v, 6) for v in values[0]} <= labels <= {round(v, 6) for v in values[0] + values[1]}
        x_ticks = grid.tick_values()["bottom"]
        between = (x_ticks[0][0] + min(v for v in x_ticks[0] + x_ticks[1] if v > x_ticks[0][0])) / 2
        middle_y = plot.getViewBox().viewRect().center().y()
        shades = {}
        for x in (x_ticks[0][1], x_ticks[1][0], between):  # a labelled tick, one between, and no tick
            point = plot.getViewBox().mapViewToScene(pg.Point(x, middle_y))
            columns = pixels[int(box.top()) + 2 : int(box.bottom()) - 2, round(point.x()) - 1 : round(point.x()) + 2]
            shades[x] = float(np.median(columns.sum(axis=2), axis=0).min())  # white is 765; a line, one column
        labelled, minor, empty = shades.values()
        assert labelled < minor < empty == 765, shades  # darker at a labelled tick than between levels
