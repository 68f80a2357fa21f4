"""The window shows the truth: each stale-state case a new user met, as a scenario (pytest-qt, offscreen)."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from dataclasses import replace

import pytest
from PySide6.QtCore import QThread
from test_window import TIMEOUT_MS, _open, _rows, small_training_set
from torch import nn

from conftest import run_cli
from secateur.app.time_left import TimeLeft
from secateur.app.training_view import smoothed
from secateur.app.tree_model import BAR_ROLE
from secateur.app.window import MainWindow
from secateur.app.worker import GIL_SWITCH_INTERVAL

MAIN = threading.main_thread()


def _run(qtbot, window: MainWindow, start) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        start()
    window.draw_now()


def _kept_column(window: MainWindow) -> list[str]:
    return [window.tree_model._rows[name][5].text() for name in _rows(window.tree_model)]


def _bars(window: MainWindow) -> list[object]:
    return [window.tree_model._rows[name][6].data(BAR_ROLE) for name in _rows(window.tree_model)]


def test_switching_method_clears_heatmaps_bars_plan_and_apply(qtbot, window: MainWindow) -> None:
    _open(qtbot, window, "demo-vgg")
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    assert window.select_layer("features.3") and window.heatmap.image.image is not None
    assert window.panel.apply_button.isEnabled() and any(bar is not None for bar in _bars(window))
    window.panel.picker.setCurrentText("taylor")
    window.draw_now()
    assert window.session.scores is None and window.session.plan is None
    assert window.heatmap.image.image is None and window.heatmap.strip_image.image is None
    assert all(bar is None for bar in _bars(window))
    assert not any(" / " in text and text.split(" / ")[0] != text.split(" / ")[1] for text in _kept_column(window))
    assert not window.panel.apply_button.isEnabled() and "run taylor first" in window.panel.apply_button.toolTip()
    assert "l1's scores, plan and heatmaps were cleared" in window.statusBar().currentMessage()


def test_switching_from_a_block_method_clears_its_removed_marks(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    window.panel.picker.setCurrentText("cka-layer")
    for name, value in (("samples", "32"), ("finetune_epochs", "0")):
        window.panel.set_param(name, value)
    _run(qtbot, window, window.run_method)
    with qtbot.waitSignal(window.preview_done, timeout=TIMEOUT_MS):
        window.panel.target_kind.setCurrentIndex(2)
    window.draw_now()
    assert "removed" in _kept_column(window)
    window.panel.picker.setCurrentText("l1")
    window.draw_now()
    assert "removed" not in _kept_column(window) and not window.panel.apply_button.isEnabled()


def test_controls_follow_the_job_and_cancel_is_acknowledged_at_once(qtbot, window: MainWindow) -> None:
    _open(qtbot, window, "demo-vgg")
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    assert window.progress.format() == "idle"  # the last job's text does not linger
    window.panel.picker.setCurrentText("taylor")
    window.panel.set_param("batches", "30")
    window.session.settings = replace(window.session.settings, batch_size=32)  # a check every batch: ~0.5 s here
    window.run_method()
    assert window.progress.format() == "score with taylor…"
    for button in (window.panel.apply_button, window.panel.sweep_button, window.panel.run_button):
        assert not button.isEnabled() and "wait: score with taylor is running" in button.toolTip()
    assert not window.panel.picker.isEnabled() and window.panel.cancel_button.isEnabled()
    qtbot.wait(300)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        clicked = time.monotonic()
        window.panel.cancel_button.click()
        acknowledged = time.monotonic() - clicked
        assert window.progress.format() == "cancelling…" and "cancelling" in window.statusBar().currentMessage()
        assert not window.panel.cancel_button.isEnabled()
    stopped = time.monotonic() - clicked
    assert acknowledged < 0.1  # the job itself stops at its next batch: timed in bench/gui_responsiveness.py
    assert stopped < 10.0  # a generous bound: the test machine is shared
    assert "cancelled; nothing was changed" in window.statusBar().currentMessage()
    assert window.panel.run_button.isEnabled() and window.progress.format() == "idle"


def test_apply_shows_the_new_structure_before_the_measurements(qtbot, window: MainWindow) -> None:
    _open(qtbot, window, "demo-vgg")
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    params_before = window.session.tree.params
    seen: list[tuple[float, bool, str]] = []
    clicked = time.monotonic()

    def on_changed(names: set[str]) -> None:
        if "model" in names and window.session.history:
            seen.append((time.monotonic() - clicked, window.session.metrics_after is None, window.results.cell(0, 2)))

    window.bridge.changed.connect(on_changed)
    _run(qtbot, window, window.apply_plan)
    (after_seconds, unmeasured, accuracy_cell), *_ = seen
    assert unmeasured and accuracy_cell == "measuring…"  # structure first, accuracy later
    assert window.session.tree.params < params_before
    assert window.results.cell(2, 2) != window.results.cell(2, 1)  # params after differ from before
    assert after_seconds < 30  # ~1 s: see bench/gui_responsiveness.py
    median, spread = window.results.cell(4, 2), window.results.cell(5, 2)
    low, high = (float(v) for v in spread.split("–"))
    assert low <= float(median) <= high and "batch 1" in window.results.caption.text()


def test_table_after_fine_tuning_equals_a_fresh_eval_and_follows_undo(qtbot, window: MainWindow, tmp_path) -> None:
    _open(qtbot, window, "demo-vgg")
    small_training_set(window)
    curve_points: list[tuple[int, int]] = []

    def on_changed(names: set[str]) -> None:
        if "training" in names:
            drawn = window.training.smooth.getData()[0]
            curve_points.append((0 if drawn is None else len(drawn), len(window.session.training.epochs)))

    window.bridge.changed.connect(on_changed)
    _run(qtbot, window, lambda: window.finetune(1))
    assert any(steps > 0 and epochs == 0 for steps, epochs in curve_points)  # the loss shows before the epoch ends
    session = window.session
    path = tmp_path / "tuned.safetensors"
    _run(qtbot, window, lambda: window.save(str(path)))
    fresh = json.loads(run_cli("eval", str(path), "--data", "demo", "--json", "--latency-runs", "2").stdout)
    after = session.metrics_after
    assert (after.accuracy, after.params, after.macs) == (fresh["accuracy"], fresh["params"], fresh["macs"])
    assert after.loss == pytest.approx(fresh["loss"], rel=1e-4)
    assert window.results.cell(0, 2) == f"{fresh['accuracy']:.2f}"
    before = session.metrics_before
    assert window.results.cell(0, 3) == ("+" if after.accuracy > before.accuracy else "") + (
        f"{after.accuracy - before.accuracy:.2f}"
    )
    assert window.results.cell(2, 4) == f"{100.0 * (after.params - before.params) / before.params:+.1f}"
    assert window.results.cell(1, 4) == ""  # no relative change of a loss
    _run(qtbot, window, window.undo)
    assert window.results.cell(0, 2) == window.results.cell(0, 1) == f"{before.accuracy:.2f}"


def test_no_torch_runs_on_the_qt_thread(qtbot, window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every forward pass, trace and plan happens on a worker: open, score, preview, apply, undo."""
    from secateur.core.pruning.workspace import Workspace

    on_qt_thread: list[str] = []
    calls: list[str] = []

    def checked(name: str, original):
        def wrapper(*args, **kwargs):
            calls.append(name)
            if threading.current_thread() is MAIN or QThread.currentThread() is window.thread():
                on_qt_thread.append(name)
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(nn.Module, "__call__", checked("forward", nn.Module.__call__))
    for name in ("plan", "score", "apply", "_prepare", "layer_tree"):
        monkeypatch.setattr(Workspace, name, checked(f"Workspace.{name}", getattr(Workspace, name)))
    _open(qtbot, window, "demo-vgg")
    window.session.data = None  # nothing to measure: the structural steps are what is checked here
    window.panel.picker.setCurrentText("l1")
    _run(qtbot, window, window.run_method)
    with qtbot.waitSignal(window.preview_done, timeout=TIMEOUT_MS):
        window.panel.target_value.setValue(0.5)
    assert window.session.plan.target.value == 0.5
    _run(qtbot, window, window.apply_plan)
    _run(qtbot, window, window.undo)
    assert {"forward", "Workspace.plan", "Workspace.score", "Workspace.apply", "Workspace.layer_tree"} <= set(calls)
    assert on_qt_thread == []


def test_the_window_takes_the_gil_back_from_a_worker_within_a_fifth_of_a_millisecond(qtbot) -> None:
    """A worker running Python hands the GIL over after 0.2 ms, not Python's 5 ms, when the Qt thread paints."""
    sys.setswitchinterval(0.005)
    qtbot.addWidget(MainWindow())
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL) == pytest.approx(0.0002)


def test_time_left_waits_until_meaningful_and_does_not_jump() -> None:
    estimate = TimeLeft()
    assert estimate.update("score", 1, 100, now=0.0) is None
    assert estimate.update("score", 2, 100, now=0.5) is None  # too early, too little done
    now, shown = 0.5, []
    for step in range(3, 60):
        now += 0.2 if step % 2 else 0.8  # reports arrive unevenly: 0.5 s a step on average
        left = estimate.update("score", step, 100, now)
        if left is not None:
            shown.append(left)
    assert shown and all(0.7 < b / a < 1.05 for a, b in itertools.pairwise(shown))
    assert shown[-1] == pytest.approx(41 * 0.5, rel=0.25)
    assert estimate.update("evaluate", 1, 10, now=30.0) is None  # a new phase starts without a number
    assert estimate.text(30.0) == "evaluate"


def test_the_clock_label_names_a_new_phase_at_once(qtbot, window: MainWindow) -> None:
    """The label beside the bar ticks once a second; a new phase is named when it starts, not at the next tick."""
    gate = threading.Event()

    def two_phases(progress) -> None:
        progress("first phase", 0, 10)
        progress("second phase", 0, 10)
        gate.wait(10)

    window._run("two phases", two_phases)
    window._clock.stop()  # no tick: only the phase's start may write the label
    try:
        qtbot.waitUntil(lambda: window.elapsed.text().endswith("second phase"), timeout=30_000)
    finally:
        gate.set()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        pass


def test_smoothed_loss_is_a_debiased_moving_average() -> None:
    values = smoothed([2.0, 2.0, 2.0])
    assert values.tolist() == pytest.approx([2.0, 2.0, 2.0])  # no pull towards zero at the start
    assert smoothed([0.0, 10.0], weight=0.5)[1] == pytest.approx(10.0 * 0.5 / 0.75)
