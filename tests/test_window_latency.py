"""The window's latency target: chosen in the method panel, planned on the worker with progress, cancellable.

The timings are the stand-in MACs clock (conftest's ``macs_clock``), so the
plan the window shows can be checked against a plan made directly, and the
tests do not depend on the machine's load.
"""

from __future__ import annotations

from conftest import scored_window, staircase
from secateur.app.window import MainWindow
from secateur.core.pruning import latency
from secateur.core.pruning.plan import PlanOptions, Target

TIMEOUT_MS = 600_000


def _choose_latency(window: MainWindow, value: float, batch: int) -> None:
    panel = window.panel
    panel.target_kind.setCurrentIndex(panel.target_kind.findData("latency"))
    panel.latency_batch.setValue(batch)
    panel.target_value.setValue(value)


def test_a_latency_target_is_planned_on_the_worker_and_shown(qtbot, window: MainWindow, macs_clock) -> None:
    scored_window(qtbot, window)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS) as done:
        _choose_latency(window, 0.4, 4)
    assert done.args == ["plan for latency"]  # a job of its own, with progress and Cancel, not a quiet preview
    window.draw_now()
    plan = window.session.plan
    assert plan is not None and plan.target == Target("latency", 0.4)
    assert set(macs_clock.round_batches) == {4}  # measured at the panel's batch size
    options = window.session.plan_options(window.panel.options())
    assert options == PlanOptions(latency_batch_size=4, raw_scores=options.raw_scores)
    expected = window.session.workspace().plan(window.session.scored.scores, Target("latency", 0.4), options, "l1")
    assert {gid: g.kept for gid, g in plan.groups.items()} == {gid: g.kept for gid, g in expected.groups.items()}
    assert abs(1 - plan.predicted_macs / window.session.tree.macs - 0.4) <= latency.LATENCY_TOLERANCE + 1e-9
    assert "measured latency at batch 4" in window.panel.plan_info.text()


def test_a_latency_target_by_table_is_timed_on_the_worker_and_shown(
    qtbot, window: MainWindow, macs_clock, tmp_path
) -> None:
    """The table's plan is checked by timing too: the window shows the knapsack's note and the measured one."""
    scored_window(qtbot, window)
    window.session.workspace().latency_table(1, folder=tmp_path, timer=staircase)  # the table, not timed here
    window.panel.latency_table.setChecked(True)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS) as done:
        _choose_latency(window, 0.3, 1)
    assert done.args == ["plan for latency"]
    window.draw_now()
    plan = window.session.plan
    assert plan is not None and plan.target == Target("latency", 0.3) and macs_clock.reductions
    assert abs(1 - plan.predicted_macs / window.session.tree.macs - 0.3) <= latency.LATENCY_TOLERANCE + 1e-9
    assert "HALP knapsack on the latency table" in plan.notes[-2] and "table goal" in plan.notes[-1]
    assert "measured latency at batch 1" in window.panel.plan_info.text()


def test_cancelling_a_latency_plan_stops_it_and_keeps_no_plan(qtbot, window: MainWindow, macs_clock) -> None:
    scored_window(qtbot, window)
    _choose_latency(window, 0.4, 1)
    qtbot.waitUntil(lambda: window.job is not None and window.job.name == "plan for latency", timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: len(macs_clock.round_batches) > 0, timeout=TIMEOUT_MS)
    window.draw_now()
    assert window.session.plan is None and window.panel.plan_info.text() == ""  # the 0.3 ratio plan is gone
    rounds_at_cancel = len(macs_clock.round_batches)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.cancel()
    # stopped at the next timed round, not after the candidate's 15 rounds
    assert len(macs_clock.round_batches) <= rounds_at_cancel + 2
    assert window.job is None and window.session.plan is None
    assert "cancelled" in window.statusBar().currentMessage()


def test_the_target_choices_follow_the_methods_granularity(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo", "demo")
    panel = window.panel
    panel.picker.setCurrentText("l1")
    panel.target_kind.setCurrentIndex(panel.target_kind.findData("latency"))
    assert panel.latency_batch.isVisible() and panel.latency_table.isVisible()
    assert panel.options().latency_batch_size == 1 and not panel.options().latency_table
    panel.latency_table.setChecked(True)
    assert panel.options().latency_table and panel.target() == Target("latency", 0.3)
    panel.picker.setCurrentText("cka-layer")  # a block method: whole blocks, no latency target
    assert [panel.target_kind.itemData(i) for i in range(3)] == ["ratio", "macs", "blocks"]
    assert not panel.latency_batch.isVisible() and panel.target_blocks.isVisible()
    assert not panel.options().latency_table
    panel.picker.setCurrentText("l1")
    assert [panel.target_kind.itemData(i) for i in range(3)] == ["ratio", "macs", "latency"]


def test_a_refused_latency_target_says_so_in_the_window_s_terms(qtbot, window: MainWindow, macs_clock) -> None:
    scored_window(qtbot, window)
    prunable = [group.id for group in window.session.tree_now().groups if group.prunable]
    for group in prunable[1:]:  # one group left to cut: 0.95 less latency is out of reach
        window.session.set_locked(group)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        _choose_latency(window, 0.95, 1)
    window.draw_now()
    assert window.session.plan is None
    message = window.panel.plan_info.text()
    assert message.startswith("latency reduction 0.95: cannot be reached"), message  # not the flag "--latency-…"
    status = window.statusBar().currentMessage()
    assert status == f"no plan: {message}", status  # not "plan for latency: done"
    assert not window.panel.apply_button.isEnabled()
    window.panel.latency_batch.setValue(2)  # another target: while it is timed, the old refusal is gone
    qtbot.waitUntil(lambda: window.job is not None and window.job.name == "plan for latency", timeout=TIMEOUT_MS)
    window.draw_now()
    assert window.panel.plan_info.text() == ""
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        pass


def test_a_long_stage_is_shortened_to_fit_the_progress_bar(qtbot, window: MainWindow, macs_clock) -> None:
    scored_window(qtbot, window)
    seen: list[tuple[str, str]] = []
    window.progress.valueChanged.connect(lambda _: seen.append((window.progress.text(), window.progress.toolTip())))
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        _choose_latency(window, 0.4, 1)
    stage = "latency target: timing candidate plans"
    shown = [(text, tip) for text, tip in seen if tip == stage]
    assert shown, seen
    metrics = window.progress.fontMetrics()
    for text, _ in shown:
        assert "…" in text and text.endswith("%")
        assert metrics.horizontalAdvance(text) <= window.progress.width() - 16, (text, window.progress.width())
