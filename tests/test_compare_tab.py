"""The window's Compare tab: points drawn as cells finish, a click loads that model, cancel keeps cells, export."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PySide6.QtWidgets import QFileDialog
from torch.utils.data import Subset

from secateur.app.compare_plots import latency_ms
from secateur.app.report import human_count
from secateur.app.window import MainWindow
from secateur.core.pruning.loading import load_checkpoint
from secateur.core.workflow.compare import final_accuracy

TIMEOUT_MS = 600_000
TEST_SAMPLES = 200  # a small evaluation sample keeps every cell to a second or two


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _open(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo", "demo")
    data = window.session.data
    window.session.data = replace(data, test=Subset(data.test, range(TEST_SAMPLES)))
    tab = window.compare
    tab.latency_batches, tab.latency_runs = (1,), 2


def _points(window: MainWindow, axis: str) -> dict[str, list[tuple[float, float]]]:
    """What each method's series in one plot holds, as (x, y) pairs."""
    scatters = window.compare.plots.scatters
    return {
        method: [(p.pos().x(), p.pos().y()) for p in scatter.points()]
        for (on, method), scatter in scatters.items()
        if on == axis
    }


def test_points_fill_in_a_click_loads_the_cell_and_export_writes_the_report(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open(qtbot, window)
    tab = window.compare
    base = window.session.model
    tab.set_methods(["l1", "random"])
    tab.targets.setText("0.5")
    drawn: list[int] = []  # points on the MACs plot each time a cell arrives: they fill in one by one
    tab.cell_added.connect(lambda _: drawn.append(sum(len(v) for v in _points(window, "macs").values())))
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        tab.run_button.click()
        assert not tab.run_button.isEnabled() and tab.cancel_button.isEnabled()
    assert drawn == [1, 2]
    records = [cell.record for cell in tab.cells]
    assert [r["method"] for r in records] == ["l1", "random"]
    assert tab.document is not None and tab.document["cells"] == records
    for axis, x_of in (("macs", lambda r: r["macs"] / 1e6), ("latency", latency_ms)):
        points = _points(window, axis)
        for record in records:
            assert points[record["method"]] == [pytest.approx((x_of(record), final_accuracy(record)))]
    assert tab.table.rowCount() == 2
    assert tab.table.item(1, 2).text() == human_count(records[1]["params"])
    assert tab.run_button.isEnabled() and not tab.cancel_button.isEnabled() and tab.export_button.isEnabled()

    # clicking random's point on the latency plot loads that model as an apply would
    scatter = tab.plots.scatters[("latency", "random")]
    target = records[1]
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        tab.plots.points_clicked(scatter, [scatter.points()[0]])
    session = window.session
    assert session.model is not base and _params(session.model) == target["params"]
    assert session.tree.params == target["params"] and session.tree.macs == target["macs"]
    window.draw_now()
    assert window.results.cell(2, 0) == "params" and window.results.cell(2, 2) == human_count(target["params"])
    assert window.results.cell(2, 1) == human_count(_params(base))
    assert window.tabs.currentWidget() is window.results
    assert session.metrics_after is not None and session.metrics_after.params == target["params"]
    assert session.history[-1].model is base and session.history[-1].method == "random"

    # a second click, on l1's point, stacks on top: undo returns to random's model, then to the base
    scatter = tab.plots.scatters[("macs", "l1")]
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        tab.plots.points_clicked(scatter, [scatter.points()[0]])
    assert _params(session.model) == records[0]["params"]
    saved = tmp_path / "l1.safetensors"
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.save(str(saved))
    assert _params(load_checkpoint(saved)) == records[0]["params"]  # the edits replay from the base architecture
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.undo()
    assert _params(session.model) == target["params"]
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.undo()
    assert session.model is base

    out = tmp_path / "report"
    out.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(out))
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        tab.export_button.click()
    assert json.loads((out / "compare.json").read_text()) == tab.document
    report = (out / "report.html").read_text()
    assert report.count("<svg") == 2 and "<td>l1</td>" in report and "<td>random</td>" in report
    assert (out / "pareto_macs.png").is_file() and (out / "pareto_latency.svg").is_file()


def test_cancel_keeps_the_finished_cells_and_returns_to_idle(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    tab = window.compare
    tab.set_methods(["l1"])
    tab.targets.setText("0.3, 0.5, 0.7")
    cancelled_at: list[float] = []

    def cancel_after_the_first(count: int) -> None:
        if count == 1:
            tab.cancel_button.click()
            cancelled_at.append(time.monotonic())

    tab.cell_added.connect(cancel_after_the_first)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        tab.run_button.click()
    stopped = time.monotonic() - cancelled_at[0]
    assert stopped < 5.0  # acknowledged at once, stopped at the next check (a loaded 2-core machine: margin)
    assert len(tab.cells) == 1 and tab.cells[0].record["target"] == {"kind": "macs", "value": 0.3}
    assert sum(len(v) for v in _points(window, "macs").values()) == 1 and tab.table.rowCount() == 1
    assert tab.document is not None and tab.document["cells"] == [tab.cells[0].record]
    assert window.job is None and tab.run_button.isEnabled() and not tab.cancel_button.isEnabled()
    assert tab.export_button.isEnabled()
    assert tab.status.text().startswith("cancelled: 1 of 3 cells")


def test_bad_targets_and_no_method_are_refused_before_any_job(qtbot, window: MainWindow) -> None:
    _open(qtbot, window)
    tab = window.compare
    tab.targets.setText("0.5, 1.2")
    tab.run_button.click()
    assert window.job is None and "strictly between 0 and 1" in tab.status.text()
    tab.targets.setText("0.5")
    tab.set_methods([])
    tab.run_button.click()
    assert window.job is None and tab.status.text() == "Check at least one method."
