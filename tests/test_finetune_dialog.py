"""Prune → Fine-tune…: the dialog offers the CLI's choices with its defaults, and they reach the training run."""

from __future__ import annotations

import math

import pytest
from PySide6.QtWidgets import QDialogButtonBox

from conftest import run_cli
from secateur.app.finetune_dialog import FinetuneDialog
from secateur.app.window import MainWindow
from secateur.core.workflow import session as session_module

TIMEOUT_MS = 600_000


def _cli_default(help_text: str, option: str) -> str:
    """The default printed in ``secateur finetune --help`` for an option, e.g. "(0.01)"."""
    words = " ".join(help_text.split())
    start = words.index(option + " ")
    return words[words.index("(", start) + 1 : words.index(")", start)]


def test_the_dialog_defaults_are_the_clis(qtbot) -> None:
    dialog = FinetuneDialog()
    qtbot.addWidget(dialog)
    help_text = run_cli("finetune", "--help").stdout
    choice = dialog.choice()
    assert choice.config.lr == pytest.approx(float(_cli_default(help_text, "--lr LR")))
    assert choice.config.momentum == pytest.approx(float(_cli_default(help_text, "--momentum MOMENTUM")))
    assert choice.config.weight_decay == pytest.approx(float(_cli_default(help_text, "--weight-decay WEIGHT_DECAY")))
    assert choice.batch_size == int(_cli_default(help_text, "--batch-size BATCH_SIZE"))
    assert choice.seed == int(_cli_default(help_text, "--seed SEED").split()[-1])
    assert choice.config.steps_per_epoch is None  # the CLI trains whole epochs unless --steps-per-epoch


def _small(qtbot, window: MainWindow, samples: int) -> None:
    """The demo with a few training images and small evaluation splits: seconds, not a minute."""
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    data = window.session.data
    data.train = data.train.subset(list(range(samples)))
    data.calibration = data.calibration.subset(list(range(64)))
    data.test = data.test.subset(list(range(64)))


def test_values_chosen_in_the_dialog_reach_the_training_run(qtbot, window: MainWindow, monkeypatch) -> None:
    samples = 96
    _small(qtbot, window, samples)
    seen = {}
    real = session_module.finetune

    def spy(model, data, config, settings, *args, **kwargs):
        seen["config"], seen["settings"] = config, settings
        return real(model, data, config, settings, *args, **kwargs)

    monkeypatch.setattr(session_module, "finetune", spy)
    window.ask_finetune()
    dialog = window.findChild(FinetuneDialog, "finetune")
    assert dialog is not None and dialog.isVisible()
    dialog.epochs.setValue(2)
    dialog.lr.setValue(0.003)
    dialog.momentum.setValue(0.8)
    dialog.weight_decay.setValue(0.0001)
    dialog.batch_size.setValue(32)
    dialog.seed.setValue(7)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    config, settings = seen["config"], seen["settings"]
    assert (config.epochs, config.lr, config.momentum, config.weight_decay) == (2, 0.003, 0.8, 0.0001)
    assert (settings.batch_size, settings.seed) == (32, 7)
    assert window.session.settings.batch_size == 128  # the choice is for this run only
    log = window.session.training
    assert [record.epoch for record in log.epochs] == [1, 2]  # two epochs in the history
    assert len(log.steps) == 2 * math.ceil(samples / 32)  # 96 images at 32 a step: 3 steps an epoch


def test_a_step_cap_from_the_dialog_shortens_each_epoch(qtbot, window: MainWindow) -> None:
    _small(qtbot, window, 256)
    window.ask_finetune()
    dialog = window.findChild(FinetuneDialog, "finetune")
    dialog.batch_size.setValue(16)
    dialog.steps.setValue(2)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        dialog.accept()
    assert len(window.session.training.epochs) == 1 and len(window.session.training.steps) == 2
