"""The method panel: pick a method, fill its parameters, set the target; run, cancel and apply from a fixed bar."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from secateur.app.docks import scrolling
from secateur.core.common.errors import InputError
from secateur.core.pruning.methods import MethodInfo, ParamSpec
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import PlanOptions, Target

LATENCY_TIP = "the measured latency on the session's device, at the batch size below, falls by this fraction"
BLOCKS_TIP = "a number of whole residual blocks to remove"


def _editor(spec: ParamSpec) -> QWidget:
    """A form field for one parameter; text fields, so the core's validation judges every value."""
    if spec.type == "bool":
        box = QCheckBox()
        box.setChecked(bool(spec.default))
        return box
    if spec.type == "choice":
        combo = QComboBox()
        combo.addItems(list(spec.choices or ()))
        combo.setCurrentText(str(spec.default))
        return combo
    field = QLineEdit(str(spec.default))
    field.setPlaceholderText(spec.type)
    return field


def _value(widget: QWidget) -> Any:
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    return widget.text()  # type: ignore[attr-defined]


class MethodPanel(QWidget):
    """Emits ``run_requested`` with validated parameters; shows parameter errors inline."""

    run_requested = Signal()
    cancel_requested = Signal()
    apply_requested = Signal()
    undo_requested = Signal()
    sweep_requested = Signal()
    params_checked = Signal(bool)  # the form was validated (True: every value is accepted)

    def __init__(self, methods: dict[str, MethodInfo], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.methods = methods
        self.picker = QComboBox()
        self.picker.addItems(sorted(methods))
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.form_box = QGroupBox("Parameters")
        self.form = QFormLayout(self.form_box)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        self.target_kind = QComboBox()  # items carry the Target kind; the third is latency or blocks by method
        self.target_kind.addItem("channel ratio", "ratio")
        self.target_kind.addItem("MACs reduction", "macs")
        self.target_kind.addItem("latency reduction", "latency")
        self.target_value = QDoubleSpinBox()
        self.target_value.setRange(0.01, 0.99)
        self.target_value.setSingleStep(0.05)
        self.target_value.setValue(0.3)
        self.target_blocks = QSpinBox()
        self.target_blocks.setRange(1, 1000)
        self.target_blocks.setToolTip("residual blocks to remove")
        self.latency_batch = QSpinBox()
        self.latency_batch.setRange(1, 1024)
        self.latency_batch.setToolTip("the batch size the latency is measured at")
        self.latency_table = QCheckBox("plan from the latency table (HALP)")
        self.latency_table.setToolTip(
            "time each group's layers once at a few widths (cached per device), snap channel counts to the widths "
            "where latency steps down and keep the most importance under the budget, then time that plan and "
            "correct it to within ±3 points; unchecked: time candidate pruned models at one channel ratio"
        )
        self.global_ranking = QCheckBox("rank channels globally")
        self.recalibrate = QCheckBox("recalibrate BatchNorm after apply")
        self.recalibrate.setToolTip("re-estimate BatchNorm statistics on the calibration split after pruning")
        self.plan_info = QLabel()
        self.plan_info.setWordWrap(True)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.apply_button = QPushButton("Apply plan")
        self.apply_button.setEnabled(False)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setEnabled(False)
        self.sweep_button = QPushButton("Sweep")
        self.sweep_button.setToolTip("accuracy at several ratios, no fine-tuning")
        self.sweep_button.setEnabled(False)
        self._editors: dict[str, QWidget] = {}

        target = QGroupBox("Target")
        self.target_form = QFormLayout(target)
        self.target_form.addRow("remove", self.target_kind)
        self.target_form.addRow("fraction", self.target_value)
        self.target_form.addRow("blocks", self.target_blocks)
        self.target_form.addRow("batch size", self.latency_batch)
        self.target_form.addRow(self.latency_table)
        self.target_form.addRow(self.global_ranking)
        self.target_form.addRow(self.recalibrate)
        self._show_target_kind()
        self.target_kind.currentIndexChanged.connect(self._show_target_kind)
        form = QWidget()
        fields = QVBoxLayout(form)
        fields.addWidget(QLabel("Method"))
        fields.addWidget(self.picker)
        fields.addWidget(self.description)
        fields.addWidget(self.form_box)
        fields.addWidget(self.error)
        fields.addWidget(target)
        fields.addStretch(1)
        self.form_area = scrolling(form)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.form_area)
        layout.addWidget(self._action_bar())
        layout.addStretch(1)  # spare height goes below the buttons, not between the form and them

        self.picker.currentTextChanged.connect(self._show_method)
        self.run_button.clicked.connect(self._on_run)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.apply_button.clicked.connect(self.apply_requested)
        self.undo_button.clicked.connect(self.undo_requested)
        self.sweep_button.clicked.connect(self.sweep_requested)
        if methods:
            self._show_method(self.picker.currentText())

    def _action_bar(self) -> QWidget:
        """The plan's summary, Run/Cancel and Apply/Undo/Sweep under the form, outside its scroll area: always in
        view, never moving."""
        bar = QWidget()
        bar.setObjectName("method-actions")
        grid = QGridLayout(bar)
        grid.setContentsMargins(9, 4, 9, 6)
        grid.addWidget(self.plan_info, 0, 0, 1, 6)  # what Apply would do, next to it
        grid.addWidget(self.run_button, 1, 0, 1, 3)
        grid.addWidget(self.cancel_button, 1, 3, 1, 3)
        for column, button in enumerate((self.apply_button, self.undo_button, self.sweep_button)):
            grid.addWidget(button, 2, 2 * column, 1, 2)
        return bar

    def action_buttons(self) -> list[QPushButton]:
        return [self.run_button, self.cancel_button, self.apply_button, self.undo_button, self.sweep_button]

    def method(self) -> MethodInfo:
        return self.methods[self.picker.currentText()]

    def _show_method(self, method_id: str) -> None:
        method = self.methods[method_id]
        self.description.setText(f"<b>{method.title}</b> ({method.granularity})<br>{method.description}")
        while self.form.rowCount():
            self.form.removeRow(0)
        self._editors = {}
        for spec in method.params:
            editor = _editor(spec)
            editor.setToolTip(spec.help)
            if isinstance(editor, QLineEdit):
                editor.textEdited.connect(lambda _text: self.check_params())
            self.form.addRow(spec.name, editor)
            self._editors[spec.name] = editor
        self.form_box.setVisible(bool(method.params))
        self.error.clear()
        blocks = method.granularity == "block"
        self.target_kind.setItemText(0, "block fraction" if blocks else "channel ratio")
        self.target_kind.setItemText(2, "blocks" if blocks else "latency reduction")
        self.target_kind.setItemData(2, "blocks" if blocks else "latency")
        self.target_kind.setItemData(2, BLOCKS_TIP if blocks else LATENCY_TIP, Qt.ItemDataRole.ToolTipRole)
        self.global_ranking.setVisible(not blocks)
        self._show_target_kind()

    def _show_target_kind(self, _index: int = 0) -> None:
        """A count of blocks is a whole number; fractions are for the other kinds; latency has its batch size."""
        kind = self.target_kind.currentData()
        self.target_form.setRowVisible(self.target_value, kind != "blocks")
        self.target_form.setRowVisible(self.target_blocks, kind == "blocks")
        self.target_form.setRowVisible(self.latency_batch, kind == "latency")
        self.target_form.setRowVisible(self.latency_table, kind == "latency")

    def params(self) -> dict[str, Any]:
        """The form's values, validated by the core (the same check as ``--param``); raises InputError."""
        method = self.method()
        return validate_params(method.params, {name: _value(w) for name, w in self._editors.items()}, method.id)

    def set_param(self, name: str, value: str) -> None:
        editor = self._editors[name]
        if isinstance(editor, QLineEdit):
            editor.setText(value)
            self.check_params()

    def target(self) -> Target:
        kind = self.target_kind.currentData()
        if kind == "blocks":
            return Target("blocks", self.target_blocks.value())
        return Target(kind, round(self.target_value.value(), 4))

    def options(self) -> PlanOptions:
        latency = self.target_kind.currentData() == "latency"
        return PlanOptions(
            global_ranking=self.global_ranking.isChecked(),
            raw_scores=self.method().comparable_scores,
            latency_batch_size=self.latency_batch.value(),
            latency_table=latency and self.latency_table.isChecked(),
        )

    def check_params(self) -> bool:
        """Validate the form as it is typed in, showing the core's message under it (the window enables Run)."""
        try:
            self.params()
        except InputError as error:
            self.error.setText(str(error))
            self.params_checked.emit(False)
            return False
        self.error.clear()
        self.params_checked.emit(True)
        return True

    def params_ok(self) -> bool:
        try:
            self.params()
        except InputError:
            return False
        return True

    def _on_run(self) -> None:
        if self.check_params():
            self.run_requested.emit()
