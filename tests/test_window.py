"""The window, driven with pytest-qt offscreen: loading, scoring, cancelling, bad input, saving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from conftest import run_cli
from secateur.app.tree_model import BAR_ROLE, NAME_ROLE, SORT_ROLE
from secateur.app.window import MainWindow
from secateur.core.testing import state_hash
from secateur.core.workflow.session import TrainingLog

TIMEOUT_MS = 600_000  # generous: the test machine is shared and often loaded


def _open(qtbot, window: MainWindow, spec: str = "demo") -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open(spec, "demo")


def _rows(model, parent=None) -> list[str]:
    from PySide6.QtCore import QModelIndex

    parent = parent or QModelIndex()
    names = []
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        names.append(index.data(NAME_ROLE))
        names.extend(_rows(model, index))
    return names


def test_tree_rows_match_inspect(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    inspected = json.loads(run_cli("inspect", "demo", "--json").stdout)
    assert _rows(window.tree_model) == [layer["name"] for layer in inspected["layers"]]
    params = {layer["name"]: layer["params"] for layer in inspected["layers"]}
    first = window.tree_model.index(0, 0)
    assert first.data(NAME_ROLE) == "conv1" and first.siblingAtColumn(3).data(SORT_ROLE) == params["conv1"]
    assert window.select_layer("layer2.0.conv1")


def test_plugins_that_failed_are_listed_with_their_tracebacks(qtbot, window: MainWindow) -> None:
    window.show_failed_plugins()
    dialog = next(box for box in window.findChildren(QMessageBox) if box.windowTitle() == "Plugins")
    assert "1 plugin(s) failed to load" in dialog.text() and "broken (secateur_broken)" in dialog.informativeText()
    assert "ImportError: no module named x" in dialog.detailedText()


def test_scoring_fills_heatmaps_and_tree_then_apply_and_undo(qtbot, window: MainWindow, tmp_path: Path) -> None:
    _open(qtbot, window, "demo-vgg")
    window.panel.picker.setCurrentText("l1")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    prunable = {g.id for g in window.session.workspace().groups if g.prunable}
    assert set(window.session.scores.groups) == prunable
    assert window.select_layer("features.3")
    assert window.heatmap.image.image is not None and "features.3" in window.heatmap.title.text()
    assert window.panel.apply_button.isEnabled()  # the plan preview is ready
    before = window.session.model
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    assert window.results.table.rowCount() == 6 and window.session.model is not before
    path = tmp_path / "pruned.safetensors"
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.save(str(path))
    probe = (
        "import sys; from secateur.core import load_checkpoint;"
        "print(load_checkpoint(sys.argv[1]).features[0].out_channels)"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == window.session.model.features[0].out_channels < 32
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.undo()
    assert window.session.model is before


def test_cancel_midway_leaves_the_model_unchanged(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    before = state_hash(window.session.model)
    window.panel.picker.setCurrentText("taylor")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
        window.cancel()
    assert state_hash(window.session.model) == before
    assert "cancelled" in window.statusBar().currentMessage()


def test_a_bad_parameter_is_refused_in_the_form(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    window.panel.picker.setCurrentText("taylor")
    window.panel.set_param("batches", "0")
    assert "parameter batches='0' is out of range" in window.panel.error.text()
    assert not window.panel.run_button.isEnabled()  # refused as typed, before any run
    window.panel.run_button.click()
    assert window.job is None
    window.panel.set_param("batches", "2")
    assert window.panel.error.text() == "" and window.panel.run_button.isEnabled()


def test_a_bad_model_file_shows_an_error_dialog(qtbot, window: MainWindow, tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open(str(bad), "demo")
    dialog = window.findChild(QMessageBox, "error-dialog")
    assert dialog is not None and "not a readable .safetensors file" in dialog.text()
    assert window.isVisible() and window.session is None


def test_screenshot_option_renders_the_window_after_running_a_method(tmp_path: Path) -> None:
    import os

    from PySide6.QtGui import QImage

    path = tmp_path / "window.png"
    command = [sys.executable, "-m", "secateur.app.launcher", "gui", "--model", "demo-vgg", "--method", "l2"]
    command += ["--select", "features.0", "--size", "1024x700", "--screenshot", str(path)]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    image = QImage(str(path))
    assert (image.width(), image.height()) == (1024, 700)


def small_training_set(window: MainWindow, samples: int = 384) -> None:
    """Fine-tune on a few batches (the test split stays whole, so `secateur eval` can check the table)."""
    data = window.session.data
    data.train = data.train.subset(list(range(samples)))
    data.calibration = data.calibration.subset(list(range(128)))


def test_finetuning_plots_each_epoch_and_can_be_undone(qtbot, window: MainWindow) -> None:
    _open(qtbot, window, "demo-vgg")
    small_training_set(window)
    before = window.session.model
    window.training.show_log(TrainingLog(planned_epochs=7))  # an earlier run's axes
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.finetune(1)
        # this run's epochs before the tab's first paint (the worker's first event came a frame later: two paints),
        # and that paint in a later turn of the event loop than this call
        assert window.tabs.currentWidget() is not window.training and window.training.ranges["x"] == (0.0, 1.0)
        qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.training, timeout=1000)
    log = window.session.training
    assert len(log.epochs) == 1 and len(log.steps) == log.steps_per_epoch > 1
    assert len(window.training.smooth.getData()[0]) == len(log.steps)
    assert len(window.training.accuracy.getData()[0]) == 1
    assert window.session.model is not before and window.panel.undo_button.isEnabled()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.undo()
    assert window.session.model is before


def test_block_method_fills_block_bars_live_and_removes_blocks(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    window.panel.picker.setCurrentText("cka-layer")
    for name, value in (("samples", "64"), ("finetune_epochs", "0")):
        window.panel.set_param(name, value)
    partial_blocks: list[str] = []
    window.session.events.scores.connect(
        lambda: partial_blocks.append(len(window.session.scores.blocks)) if window.session.scores else None
    )
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    assert partial_blocks == [1, 2, 3, 4, 5, 6, 6]  # one partial result per candidate block, as each was scored
    bars = {name: _row_of(window, name).siblingAtColumn(6).data(BAR_ROLE) for name in window.session.scores.blocks}
    assert max(bars.values()) == pytest.approx(1.0) and all(0.0 <= value <= 1.0 for value in bars.values())
    assert _row_of(window, "layer2.0").siblingAtColumn(6).data(BAR_ROLE) is None  # not removable: no bar
    with qtbot.waitSignal(window.preview_done, timeout=TIMEOUT_MS):
        window.panel.target_kind.setCurrentIndex(2)  # "blocks", offered to block methods only
        window.panel.target_blocks.setValue(2)
    window.draw_now()
    removed = window.session.plan.blocks_removed
    assert len(removed) == 2 and all(_row_of(window, n).siblingAtColumn(5).data() == "removed" for n in removed)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    assert window.session.loaded.edits[-1] == {"kind": "remove_blocks", "blocks": list(removed)}
    assert not any(name.startswith(removed[0] + ".") for name in _rows(window.tree_model))


def _row_of(window: MainWindow, name: str):
    from PySide6.QtCore import Qt

    matches = window.tree_model.match(
        window.tree_model.index(0, 0), NAME_ROLE, name, 1, Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive
    )
    assert matches, name
    return matches[0]


def test_starting_a_job_collects_qt_garbage_on_the_qt_thread(qtbot) -> None:
    import threading
    import weakref

    from PySide6.QtWidgets import QWidget

    from secateur.app.worker import Job

    orphan = QWidget()
    orphan.cycle = orphan  # only the cyclic collector can free it; it must not do so in the worker's thread
    alive = weakref.ref(orphan)
    del orphan
    seen_in_job: list[tuple[str, bool]] = []
    job = Job("probe", lambda progress: seen_in_job.append((threading.current_thread().name, alive() is None)))
    with qtbot.waitSignal(job.succeeded, timeout=TIMEOUT_MS):
        job.start()
        assert alive() is not None  # not in the click's own turn: the window paints the job's start first
    assert seen_in_job and seen_in_job[0][0] != threading.current_thread().name
    assert seen_in_job[0][1]  # collected on the Qt thread before the job ran


def test_a_job_cancelled_before_its_worker_starts_ends_cancelled_without_running(qtbot) -> None:
    """The worker starts a moment after ``start`` (the window paints first); a Cancel in that moment still ends it."""
    from secateur.app.worker import Job

    ran: list[bool] = []
    job = Job("late", lambda progress: ran.append(True))
    ended: list[str] = []
    job.succeeded.connect(lambda result: ended.append("succeeded"))
    job.cancelled.connect(lambda: ended.append("cancelled"))
    job.start()
    assert ran == []  # not run on the Qt thread, and not yet in the pool
    job.cancel()
    qtbot.waitUntil(lambda: ended == ["cancelled"], timeout=TIMEOUT_MS)
    qtbot.wait(100)
    assert ran == [] and ended == ["cancelled"]
