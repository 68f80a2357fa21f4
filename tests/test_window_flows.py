"""The flows practitioners expect: opening weights through the dialog, BatchNorm recalibration, unsaved work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PySide6.QtWidgets import QDialogButtonBox, QFileDialog, QMessageBox

from conftest import run_cli
from secateur.app.open_dialog import OpenModelDialog
from secateur.app.window import MainWindow
from secateur.core.common.errors import InputError
from secateur.core.model.specs import build_model, parse_model_spec

TIMEOUT_MS = 600_000


def _dialog(window: MainWindow) -> OpenModelDialog:
    window.ask_model()
    (dialog,) = [d for d in window.findChildren(OpenModelDialog, "open-model") if d.isVisible()]
    return dialog


def _ok(dialog: OpenModelDialog) -> None:
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


def test_opening_pt_weights_through_the_dialog(qtbot, window: MainWindow, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model(parse_model_spec("demo"), with_weights=False).model  # fresh weights, not the shipped ones
    weights = tmp_path / "mine.pt"
    torch.save({"state_dict": model.state_dict()}, weights)  # a common wrapper, read weights-only
    dialog = _dialog(window)
    dialog.model.setText("demo")
    dialog.weights.setText(str(weights))
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        _ok(dialog)
    assert not [d for d in window.findChildren(OpenModelDialog) if d.isVisible()]
    opened = window.session.model.state_dict()
    assert all(torch.equal(opened[name], value) for name, value in model.state_dict().items())
    assert str(weights) in window.windowTitle()

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a pickle")
    expected = run_cli("inspect", "demo", "--weights", str(bad)).stderr.strip().removeprefix("secateur: error: ")
    session = window.session
    dialog = _dialog(window)
    dialog.model.setText("demo")
    dialog.weights.setText(str(bad))
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        _ok(dialog)
    error = window.findChild(QMessageBox, "error-dialog")
    assert error is not None and error.text().strip() == expected.splitlines()[0].split("error: ")[-1]
    assert window.session is session  # the previous model stays


def test_a_malformed_spec_is_refused_in_the_dialog_with_the_clis_message(qtbot, window: MainWindow) -> None:
    dialog = _dialog(window)
    dialog.model.setText("net.py")
    _ok(dialog)
    assert dialog.isVisible() and window.job is None
    expected = run_cli("inspect", "net.py").stderr
    assert dialog.error.text() and dialog.error.text() in expected


def test_recalibration_checkbox_equals_the_recalibrate_action(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    assert not window.panel.recalibrate.isChecked()  # off by default, as in the CLI
    window.panel.picker.setCurrentText("l1")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()

    def buffers() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in window.session.model.state_dict().items() if "running_" in k}

    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    plain = buffers()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.recalibrate_action.trigger()  # the Prune menu's action: the core's recalibration
    reference = buffers()
    for _ in range(2):
        with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
            window.undo()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()  # undo dropped the plan; l1 makes the same one again
    window.panel.recalibrate.setChecked(True)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    recalibrated = buffers()
    assert recalibrated.keys() == plain.keys() and plain
    assert any(not torch.equal(plain[k], recalibrated[k]) for k in plain)
    assert all(torch.allclose(reference[k], recalibrated[k], atol=1e-5) for k in reference)


@pytest.mark.parametrize("answer", ["cancel", "discard"])
def test_quitting_with_an_unsaved_pruned_model_asks(qtbot, window: MainWindow, monkeypatch, answer: str) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    asked: list[str] = []

    def question(parent, title, text, buttons, default):
        asked.append(text)
        return getattr(QMessageBox.StandardButton, answer.capitalize())

    monkeypatch.setattr(QMessageBox, "question", question)
    window.confirm_unsaved = True
    assert window.close() and asked == []  # nothing pruned: nothing to ask
    window.show()
    window.panel.picker.setCurrentText("l1")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    assert window.unsaved()
    closed = window.close()
    assert asked and "not been saved" in asked[0] and "quitting" in asked[0]
    assert closed == (answer == "discard") and window.isVisible() == (answer == "cancel")
    window.confirm_unsaved = False


def test_opening_another_model_over_unsaved_work_offers_to_save_first(
    qtbot, window: MainWindow, monkeypatch, tmp_path: Path
) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    window.panel.picker.setCurrentText("l1")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    pruned = window.session.model
    path = tmp_path / "kept.safetensors"
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Save)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    window.confirm_unsaved = True
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS, check_params_cb=lambda name: name == "open"):
        window.open("demo", "demo")  # saves first, then opens
    assert path.is_file() and window.session.model is not pruned and not window.unsaved()
    window.confirm_unsaved = False


def test_the_cluster_command_fine_tunes_the_saved_pruned_model(qtbot, window: MainWindow, tmp_path: Path) -> None:
    """Prune → Fine-tune command for a cluster: refused while unsaved, then the torchrun line for the saved file."""
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    assert window.cluster_command(4, 3).split()[:2] == ["torchrun", "--nproc-per-node"]  # the model as opened
    window.panel.picker.setCurrentText("l1")
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.apply_plan()
    with pytest.raises(InputError, match="save the pruned model first"):
        window.cluster_command(4, 3)
    path = tmp_path / "pruned.safetensors"
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.save(str(path))
    words = window.cluster_command(4, 3).split()
    assert "4" in words and str(path) in words and "--epochs" in words and words[words.index("--epochs") + 1] == "3"
    assert str(tmp_path / "pruned-finetuned.safetensors") in words and "demo" in words
