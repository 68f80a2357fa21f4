"""Prune → Fine-tune…: the choices of ``secateur finetune`` in a form, with the CLI's defaults.

Epochs, the peak learning rate of the cosine schedule, Nesterov momentum,
weight decay, batch size, a cap on the steps of an epoch and the seed. The
data-loader workers and the cluster options stay on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QWidget

from secateur.core.train.finetune import FinetuneConfig

WINDOW_EPOCHS = 1  # the CLI requires --epochs; one epoch is the window's first offer


@dataclass(frozen=True)
class FinetuneChoice:
    """What the dialog returns: the training hyperparameters and the run's batch size and seed."""

    config: FinetuneConfig
    batch_size: int = 128  # secateur finetune --batch-size
    seed: int = 0  # --seed


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def _real(low: float, high: float, value: float, decimals: int, step: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class FinetuneDialog(QDialog):
    """The fine-tuning form; ``choice()`` reads it (defaults equal ``secateur finetune``'s)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fine-tune")
        self.setMinimumWidth(380)  # the note reads in two lines
        defaults, choice = FinetuneConfig(), FinetuneChoice(FinetuneConfig())
        self.epochs = _spin(1, 1000, WINDOW_EPOCHS, "epochs to train (--epochs)")
        self.lr = _real(1e-6, 10.0, defaults.lr, 6, 0.001, "peak learning rate of the cosine schedule (--lr)")
        self.momentum = _real(0.0, 0.999, defaults.momentum, 3, 0.05, "Nesterov momentum (--momentum)")
        self.weight_decay = _real(0.0, 1.0, defaults.weight_decay, 6, 1e-4, "weight decay (--weight-decay)")
        self.batch_size = _spin(1, 65536, choice.batch_size, "images per step (--batch-size)")
        self.steps = _spin(0, 1_000_000, 0, "cap an epoch at this many steps; 0: the whole training split")
        self.steps.setSpecialValueText("whole epoch")
        self.seed = _spin(0, 2**31 - 1, choice.seed, "seed of the shuffling and augmentation (--seed)")
        form = QFormLayout(self)
        note = QLabel(
            "SGD with Nesterov momentum and a cosine schedule; the best epoch on the calibration split is kept."
        )
        note.setWordWrap(True)
        form.addRow(note)
        for label, widget in (
            ("epochs", self.epochs),
            ("learning rate", self.lr),
            ("momentum", self.momentum),
            ("weight decay", self.weight_decay),
            ("batch size", self.batch_size),
            ("steps per epoch", self.steps),
            ("seed", self.seed),
        ):
            form.addRow(label, widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def choice(self) -> FinetuneChoice:
        config = FinetuneConfig(
            epochs=self.epochs.value(),
            lr=self.lr.value(),
            momentum=self.momentum.value(),
            weight_decay=self.weight_decay.value(),
            steps_per_epoch=self.steps.value() or None,
        )
        return FinetuneChoice(config, self.batch_size.value(), self.seed.value())
