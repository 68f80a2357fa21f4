"""File → Open model: a SPEC (torchvision name, .py factory, checkpoint) with optional weights, classes and size.

The dialog checks the SPEC with the CLI's own parser, so a malformed one gets the same message as
``secateur inspect``; files are read when the model opens, on a worker, and a bad one leaves the
previous model in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DATA_FORMS, load_data
from secateur.core.model.specs import SPEC_FORMS, parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.workflow.session import Session

DATA_LAYOUTS = (
    "imagefolder:DIR — DIR/train/CLASS/IMAGE and DIR/val/CLASS/IMAGE (or DIR/test/…), one folder per class\n"
    "cifar10:DIR / cifar100:DIR — DIR holds cifar-10-batches-py/ or cifar-100-python/ (the python version)\n"
    "mnist:DIR — DIR (or DIR/MNIST/raw/) holds the four *-idx?-ubyte files, gzipped or not"
)


@dataclass(frozen=True)
class ModelRequest:
    """What to open: the model SPEC and the CLI's --weights / --num-classes / --input-size, and the data SPEC."""

    model: str
    data: str | None = "demo"
    weights: str | None = None
    num_classes: int | None = None
    input_size: int | None = None

    def check(self) -> None:
        """Raise the CLI's InputError for a malformed SPEC or option (files are read when opening)."""
        parse_model_spec(self.model, self.num_classes, self.weights, self.input_size)

    def label(self) -> str:
        return self.model + (f" + {self.weights}" if self.weights else "")


def open_session(request: ModelRequest, device: torch.device, progress: Progress = SILENT) -> Session:
    """``Session.open`` with the CLI's model options (run on a worker; ``progress`` hears of the tracing)."""
    if request.weights is None and request.num_classes is None and request.input_size is None:
        return Session.open(request.model, request.data, device, progress)
    loaded = load_model(parse_model_spec(request.model, request.num_classes, request.weights, request.input_size))
    data = load_data(request.data, input_size=loaded.input_shape[1]) if request.data else None
    session = Session(loaded, data, RunSettings(device=device))
    session.trace(progress)
    return session


def _with_browse(field: QLineEdit, caption: str, filters: str) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(field, stretch=1)
    button = QPushButton("Browse…")

    def browse() -> None:
        path, _ = QFileDialog.getOpenFileName(row, caption, "", filters)
        if path:
            field.setText(path)

    button.clicked.connect(browse)
    layout.addWidget(button)
    return row


def _optional_number(low: int, high: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low - 1, high)
    box.setSpecialValueText("as built")  # the lowest value means "not given"
    box.setToolTip(tip)
    return box


class OpenModelDialog(QDialog):
    """Asks for a ModelRequest; OK stays refused (with the CLI's message) until the SPEC parses."""

    def __init__(self, data: str | None = "demo", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open a model")
        self.model = QLineEdit()
        self.model.setPlaceholderText("demo, torchvision:resnet18, net.py:build, pruned.safetensors")
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("optional: .pt / .pth (read weights-only) or .safetensors")
        self.num_classes = _optional_number(1, 100_000, "classes of a torchvision or .py model's head")
        self.input_size = _optional_number(8, 4096, "input height and width in pixels")
        self.data = QLineEdit(data or "")
        self.data.setPlaceholderText(DATA_FORMS)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        form = QFormLayout()
        form.addRow("model", _with_browse(self.model, "Model", "Models (*.safetensors *.py);;All files (*)"))
        form.addRow("weights", _with_browse(self.weights, "Weights", "Weights (*.pt *.pth *.safetensors)"))
        form.addRow("classes", self.num_classes)
        form.addRow("input size", self.input_size)
        form.addRow("data", self.data)
        hint = QLabel(f"model: {SPEC_FORMS}.\nData layouts:\n{DATA_LAYOUTS}")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    def request(self) -> ModelRequest:
        def optional(box: QSpinBox) -> int | None:
            return None if box.value() == box.minimum() else box.value()

        return ModelRequest(
            self.model.text().strip(),
            self.data.text().strip() or None,
            self.weights.text().strip() or None,
            optional(self.num_classes),
            optional(self.input_size),
        )

    def accept(self) -> None:
        try:
            self.request().check()
        except InputError as error:
            self.error.setText(str(error))
            return
        super().accept()
