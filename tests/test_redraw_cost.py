"""What one change on screen costs the Qt thread: one redraw per burst, one heatmap per redraw, one insertion per tree.

The window stalled 30–55 ms when a fast job's partial and final scores were
drawn 40 ms apart, the heatmap was drawn twice when scores and plan changed
together, and building the tree announced every layer's row to the views.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt
from test_window import _open
from test_window_truth import _run

from secateur.app.heatmap import HeatmapPanel
from secateur.app.session_bridge import INTERVAL, SessionBridge
from secateur.app.tree_model import BAR_ROLE, COLUMNS, NAME_ROLE, build_rows
from secateur.app.window import MainWindow
from secateur.app.worker import Job


def test_a_burst_of_changes_is_drawn_once_an_interval_after_its_first(qtbot) -> None:
    bridge = SessionBridge()
    drawn: list[tuple[float, set[str]]] = []
    bridge.changed.connect(lambda names: drawn.append((time.monotonic(), names)))
    first = time.monotonic()
    bridge._on_relayed("scores", ())
    qtbot.wait(int(INTERVAL * 1000 / 3))
    bridge._on_relayed("scores", ())
    bridge._on_relayed("plan", ())
    assert drawn == []  # a partial result is not drawn at once: the final one may follow within the interval
    qtbot.waitUntil(lambda: bool(drawn), timeout=2000)
    assert drawn[0][0] - first >= INTERVAL * 0.9 and drawn[0][1] == {"scores", "plan"}
    qtbot.wait(int(INTERVAL * 2000))
    assert len(drawn) == 1


def test_a_flush_within_the_interval_draws_once_and_cancels_the_pending_redraw(qtbot) -> None:
    bridge = SessionBridge()
    drawn: list[set[str]] = []
    bridge.changed.connect(drawn.append)
    bridge._on_relayed("scores", ())
    bridge.flush()  # the job ended: its last changes are drawn before its end is reported
    qtbot.wait(int(INTERVAL * 2000))
    assert drawn == [{"scores"}]


def test_scores_and_plan_changed_together_draw_the_heatmap_once(qtbot, window: MainWindow, monkeypatch) -> None:
    _open(qtbot, window, "demo-vgg")
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    assert window.select_layer("features.3")
    calls: list[str] = []
    draw = window.heatmap.show_group
    monkeypatch.setattr(window.heatmap, "show_group", lambda *args, **kw: (calls.append(args[0]), draw(*args, **kw)))
    window._redraw({"scores", "plan"})
    assert calls == ["features.3"]
    assert window.heatmap.removed_channels() == sorted(window.session.plan.groups["features.3"].removed)


def test_the_layer_tree_joins_the_model_in_one_insertion_per_top_level_row(qtbot, window: MainWindow) -> None:
    _open(qtbot, window, "demo-vgg")
    model, tree = window.tree_model, window.session.tree
    inserted: list[int] = []
    model.rowsInserted.connect(lambda parent, first, last: inserted.append(last - first + 1))
    model.set_tree(build_rows(tree))
    top_level = [layer for layer in tree.layers if layer.parent not in {other.name for other in tree.layers}]
    assert len(inserted) == len(top_level) < len(tree.layers)
    assert model.rowCount() == len(top_level) and len(model._rows) == len(tree.layers)


def test_new_scores_for_the_same_group_keep_the_axes_drawn_pictures(qtbot) -> None:
    panel = HeatmapPanel()
    qtbot.addWidget(panel)
    panel.resize(600, 500)
    panel.show()
    values = np.linspace(0.0, 1.0, 100, dtype=np.float32)
    panel.show_group("layer1", values, [3, 4])
    panel.show_overview([("layer1", values), ("layer2", values[:64])])
    panel.grab()  # paints: each axis draws its picture
    axes = [panel.plot.getAxis("left"), panel.plot.getAxis("bottom"), panel.strip_plot.getAxis("left")]
    pictures = [axis.picture for axis in axes]
    assert all(picture is not None for picture in pictures)
    panel.show_group("layer1", values[::-1].copy(), [5])  # same group, same rows: same ticks
    panel.show_overview([("layer1", values[::-1].copy()), ("layer2", values[:64])])
    assert [axis.picture for axis in axes] == pictures
    panel.show_group("layer3", values[:40])  # fewer rows: the left axis's ticks change, its picture is redrawn
    assert axes[0].picture is None and "kept" not in panel.title.text()


def test_recalibration_keeps_the_tree_rows_and_pruning_rebuilds_them(qtbot, window: MainWindow) -> None:
    _open(qtbot, window, "demo-vgg")
    window.session.data.calibration = window.session.data.calibration.subset(list(range(128)))
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    first = window.tree_model._rows["features.3"][0]
    _run(qtbot, window, window.recalibrate)  # a new model with the same structure: the same rows, kept
    assert window.session.history and window.tree_model._rows["features.3"][0] is first
    assert window.tree_model._rows["features.3"][6].data(BAR_ROLE) is None  # its scores went with the old model
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    kept = len(window.session.plan.groups["features.3"].kept)
    _run(qtbot, window, window.apply_plan)  # a pruned structure: rows rebuilt with the new channel counts
    rebuilt = window.tree_model._rows["features.3"]
    assert rebuilt[0] is not first
    assert rebuilt[5].text() == f"{kept} / {kept}"


def test_a_jobs_end_draws_each_plot_in_a_turn_of_its_own_and_reports_the_end_after_them(
    qtbot, window: MainWindow
) -> None:
    """The overview's and the heatmap's paints took 15-18 ms in one batch; each now has a batch of its own."""
    _open(qtbot, window, "demo-vgg")
    window.panel.picker.setCurrentText("l1")
    assert window.select_layer("features.3")
    order: list[str] = []
    ended, overview, heatmap = window._ended, window._draw_overview, window._draw_heatmap

    def recording(name: str, draw):
        def record(*args, **kw) -> None:
            bars = window.tree_model._shown[("features.3", "bar")] is not None
            order.append(f"{name}, bars drawn: {bars}, overview rows: {len(window.heatmap._strip_ids)}")
            draw(*args, **kw)

        return record

    window._ended = recording("end", ended)
    window._draw_overview, window._draw_heatmap = recording("overview", overview), recording("heatmap", heatmap)
    turns: list[str] = []  # what a timer turn between two steps sees: the window answered in between
    window._in_turns = lambda *steps, run=window._in_turns: (turns.append(order[-1]), run(*steps))
    window.job_done.connect(lambda name: order.append(f"job_done, heatmap: {window.heatmap.title.text()[:10]}"))
    with qtbot.waitSignal(window.job_done, timeout=60_000):
        window.run_method()
    scored = len(window.session.scores.groups)
    assert order[-4:] == [
        "end, bars drawn: False, overview rows: 0",
        "overview, bars drawn: True, overview rows: 0",
        f"heatmap, bars drawn: True, overview rows: {scored}",
        "job_done, heatmap: features.3",
    ]
    assert turns[-4:] == order[-4:]  # a new turn scheduled after the end and after each step


def test_the_hidden_block_view_is_drawn_when_shown(qtbot, window: MainWindow, monkeypatch) -> None:
    _open(qtbot, window, "demo")
    window.panel.picker.setCurrentText("l1")
    assert window.centre.currentWidget() is window.heatmap
    drawn: list[int] = []
    show_blocks = window.block_view.show_blocks
    monkeypatch.setattr(
        window.block_view,
        "show_blocks",
        lambda blocks, *a, **kw: (drawn.append(len(blocks)), show_blocks(blocks, *a, **kw)),
    )
    _run(qtbot, window, window.run_method)
    assert drawn == []  # hidden behind the heatmap: not drawn on every redraw
    window.panel.picker.setCurrentText("cka-layer")
    assert window.centre.currentWidget() is window.block_view
    assert drawn and drawn[-1] == len(window.session.tree.blocks) > 0
    assert list(window.block_view.items) == [block.name for block in window.session.tree.blocks]


def test_the_clock_label_keeps_its_size_and_elides_a_long_phase(qtbot, window: MainWindow) -> None:
    label = window.elapsed
    size = label.size()
    assert label.minimumSize() == label.maximumSize() == size  # fixed: a new text never lays the window out
    long_text = "12 s · latency table: timing layers of " + "layer4.2.conv3, " * 6 + "about 30 s left"
    window._show_elapsed(long_text)
    assert label.size() == size and "…" in label.text() and label.toolTip() == long_text
    assert label.fontMetrics().horizontalAdvance(label.text()) <= size.width()
    window._show_elapsed("3 s · scoring")
    assert label.text() == "3 s · scoring" and label.toolTip() == ""


def test_new_scores_reach_the_sorted_tree_in_one_notice_per_parent(qtbot, window: MainWindow) -> None:
    """Each item's change used to notify the views on its own: 2-3 ms per redraw of the demo's 77 rows."""
    _open(qtbot, window, "demo-vgg")
    model = window.tree_model
    notices: list[tuple[str, int]] = []  # (parent's name, column) of each notice
    model.dataChanged.connect(lambda first, *_: notices.append((first.parent().data(NAME_ROLE), first.column())))
    window.proxy.sort(COLUMNS.index("importance"), Qt.SortOrder.DescendingOrder)
    scored = [name for name in model._rows if model.group_of(name)]
    groups = list(dict.fromkeys(model.group_of(name) for name in scored))
    parents = {name.rpartition(".")[0] or None for name in scored}

    def first_child(parent: str) -> str:
        index = window.proxy.mapFromSource(model._rows[parent][0].index())
        return window.proxy.index(0, 0, index).data(NAME_ROLE)

    in_features = [model.group_of(name) for name in scored if name.startswith("features.")]
    rising = {group: (i + 1) / len(groups) for i, group in enumerate(groups)}
    model.show_scores(rising, {})
    assert sorted(notices, key=str) == sorted({(p, COLUMNS.index("importance")) for p in parents}, key=str)
    assert model.group_of(first_child("features")) == max(in_features, key=rising.get)  # the proxy re-sorted
    model.show_scores({group: 1 - value for group, value in rising.items()}, {})
    assert model.group_of(first_child("features")) == min(in_features, key=rising.get)
    notices.clear()
    model.show_plan({groups[0]: (1, model._channels[groups[0]])})
    changed = [name for name in scored if model.group_of(name) == groups[0]]
    assert notices == [(changed[0].rpartition(".")[0], COLUMNS.index("kept"))]  # one notice, for one parent
    assert model._rows[changed[0]][COLUMNS.index("kept")].text() == f"1 / {model._channels[groups[0]]}"


def test_a_progress_report_posts_the_bars_paint_instead_of_painting_at_once(qtbot, window: MainWindow) -> None:
    """QProgressBar.setValue repaints synchronously: each of a job's reports painted on its own."""
    _open(qtbot, window, "demo")
    paints: list[int] = []

    class Counter(QObject):
        def eventFilter(self, watched, event) -> bool:
            if event.type() == QEvent.Type.Paint:
                paints.append(window.progress.value())
            return False

    counter = Counter()
    window.progress.installEventFilter(counter)
    job = Job("stand-in", lambda progress: None)
    window.job = job
    qtbot.waitUntil(lambda: not window.progress.visibleRegion().isEmpty())
    window._on_progress(job, "scoring", 3, 4)
    assert window.progress.value() == 75 and paints == []  # not painted inside the call
    qtbot.waitUntil(lambda: paints == [75], timeout=2000)  # but painted right after, with the new value
    window.job = None


def test_the_trees_rows_are_built_on_the_worker_when_a_job_replaces_the_model(
    qtbot, window: MainWindow, monkeypatch
) -> None:
    """Building resnet50's rows took 5 ms of the Qt thread at the end of open and apply."""
    from secateur.app import window as window_module

    on_qt_thread: list[bool] = []  # one entry per build
    build = window_module.build_rows

    def recording_build(tree):
        on_qt_thread.append(threading.current_thread() is threading.main_thread())
        return build(tree)

    monkeypatch.setattr(window_module, "build_rows", recording_build)
    _open(qtbot, window, "demo-vgg")
    assert on_qt_thread == [False]
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    kept = len(window.session.plan.groups["features.3"].kept)
    _run(qtbot, window, window.apply_plan)
    assert on_qt_thread == [False, False]  # the pruned model's rows too, and the window drew those
    assert window.tree_model._rows["features.3"][COLUMNS.index("kept")].text() == f"{kept} / {kept}"
