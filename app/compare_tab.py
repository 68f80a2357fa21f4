"""The Compare tab: several methods at several MACs targets, drawn point by point, a click loads a cell's model.

The tab only collects the choice and draws results. The comparison itself is
the core's ``Comparison`` (what ``secateur compare`` runs), executed as one
job on the window's worker; every finished cell crosses to the Qt thread as a
queued signal, so the plots and the table fill in as cells finish, and
cancelling keeps those already drawn. Clicking a point (or double-clicking a
row) adopts that cell's model into the session as an apply would (undoable,
savable); "Export report…" writes the core's report into a chosen folder.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from secateur.app.compare_plots import ComparePlots, latency_ms
from secateur.app.controls import enable
from secateur.app.report import human_count
from secateur.app.worker import Job
from secateur.core.common.errors import InputError
from secateur.core.common.files import write_json_atomic
from secateur.core.common.progress import Progress
from secateur.core.pruning.methods import MethodInfo
from secateur.core.pruning.plan import Target
from secateur.core.train.finetune import FinetuneConfig
from secateur.core.workflow.compare import (
    COMPARE_FILE,
    CellResult,
    CompareRequest,
    Comparison,
    final_accuracy,
    missed_target,
    parse_targets,
    target_label,
)
from secateur.core.workflow.session import Session

DEFAULT_METHODS = ("l1", "taylor")
DEFAULT_TARGETS = "0.3, 0.5, 0.7"
JOB_NAME = "compare"
HEADER = ("method", "target", "params", "MACs", "accuracy %", "latency ms")
Runner = Callable[[str, Callable[[Progress], Any], Callable[[Any], None] | None], Job | None]


def macs_targets(text: str) -> list[Target]:
    """``"0.3, 0.5"`` → MACs targets (a ``kind:`` prefix, as on the command line, is accepted too)."""
    text = text.strip()
    try:
        return parse_targets(text if ":" in text else f"macs:{text}")
    except InputError as error:
        raise InputError(str(error).replace("--targets ", "targets ", 1)) from None


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class CompareTab(QWidget):
    """Methods, targets, fine-tuning and recalibration; Run/Cancel/Export; the two plots over the cells' table."""

    cell_added = Signal(int)  # the number of cells drawn so far (tests wait on it)
    cancel_requested = Signal()
    loading = Signal()  # a cell's model is being loaded: the window shows its before/after table
    _arrived = Signal(object, object)  # CellResult, the comparison's document so far (from the worker)

    def __init__(self, methods: dict[str, MethodInfo], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.methods = methods
        self.method_list = QListWidget()
        self.method_list.setFlow(QListView.Flow.LeftToRight)  # a wrapped grid of check boxes: ten fit in three rows
        self.method_list.setWrapping(True)
        self.method_list.setResizeMode(QListView.ResizeMode.Adjust)
        self.method_list.setSpacing(2)
        self.method_list.setMaximumHeight(72)
        for method_id, method in methods.items():
            item = QListWidgetItem(method_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = method_id in DEFAULT_METHODS
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            item.setToolTip(f"{method.title} ({method.granularity}), default parameters")
            self.method_list.addItem(item)
        self.targets = QLineEdit(DEFAULT_TARGETS)
        self.targets.setToolTip("fractions of the MACs to remove, comma-separated, each strictly between 0 and 1")
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 200)
        self.epochs.setToolTip("epochs of fine-tuning after each cell's pruning (0: none)")
        self.recalibrate = QCheckBox("recalibrate BatchNorm")
        self.recalibrate.setToolTip("re-estimate BatchNorm statistics on the calibration split after pruning")
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("score each method once, then prune, measure and draw every target")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop; the finished cells stay")
        self.export_button = QPushButton("Export report…")
        self.export_button.setToolTip("write report.html, compare.json and the Pareto plots into a folder")
        self.status = QLabel("Pick methods and MACs targets, then Run. Click a point to load that model.")
        self.status.setWordWrap(True)
        self.plots = ComparePlots()
        self.table = QTableWidget(0, len(HEADER))
        self.table.setHorizontalHeaderLabels(list(HEADER))
        header = self.table.horizontalHeaderItem
        header(4).setToolTip("after fine-tuning if any, else after recalibration if on, else right after pruning")
        header(5).setToolTip("median at batch 1 (the smallest measured); p10–p90 in the report")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip("double-click a row to load that model")
        self._layout()

        self.cells: list[CellResult] = []
        self.document: dict[str, Any] | None = None  # the comparison as compare.json has it, so far
        self.latency_batches: tuple[int, ...] = (1, 32)
        self.latency_runs = 20
        self._runner: Runner | None = None
        self._session: Callable[[], Session | None] = lambda: None
        self._job: Job | None = None  # the comparison's job while it runs
        self._finished = False
        self._base: Any = None  # the model the comparison pruned (cells are adopted on top of it)
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._started = 0.0
        self._total = 0

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.export_button.clicked.connect(self.ask_export)
        self.plots.point_clicked.connect(self.load)
        self.table.cellDoubleClicked.connect(lambda row, _: self.load(row))
        self._arrived.connect(self._add_cell)

    def _layout(self) -> None:
        form = QFormLayout()
        form.addRow("MACs to remove", self.targets)
        epochs_row = QHBoxLayout()
        epochs_row.addWidget(self.epochs)
        epochs_row.addWidget(self.recalibrate, stretch=1)
        form.addRow("fine-tune epochs", epochs_row)
        buttons = QHBoxLayout()
        for button in (self.run_button, self.cancel_button, self.export_button):
            buttons.addWidget(button)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plots)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(QLabel("Methods (each with its default parameters)"))
        layout.addWidget(self.method_list)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(split, stretch=1)

    def set_host(self, runner: Runner, session: Callable[[], Session | None]) -> None:
        """How jobs run (the window's ``_run``) and where the current session comes from."""
        self._runner, self._session = runner, session

    # --- controls -----------------------------------------------------------------------

    def checked_methods(self) -> list[str]:
        items = (self.method_list.item(row) for row in range(self.method_list.count()))
        return [item.text() for item in items if item.checkState() == Qt.CheckState.Checked]

    def set_methods(self, method_ids: list[str]) -> None:
        """Check exactly these methods (tests, and a caller that restores a choice)."""
        for row in range(self.method_list.count()):
            item = self.method_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.text() in method_ids else Qt.CheckState.Unchecked)

    def update_controls(self, job: Job | None, no_data: str) -> None:
        """Follow the window's job state (called whenever it changes); notice when the comparison ended."""
        mine = job is not None and job.name == JOB_NAME
        if mine:
            self._job = job
        elif self._job is not None:
            self._ended(self._job)
        busy = job is not None and not job.quiet
        waiting = f"wait: {job.name} is running (or cancel it)" if busy else ""
        enable(self.run_button, waiting or no_data)
        cancelling = mine and job is not None and job.cancel_requested
        enable(self.cancel_button, "" if mine and not cancelling else "no comparison to cancel")
        enable(self.export_button, waiting or ("" if self.cells else "run a comparison first"))

    def _say(self, text: str) -> None:
        self.status.setText(text)

    # --- running ------------------------------------------------------------------------

    def run(self) -> None:
        """Check the choice here (no torch), then run the comparison as one job on the worker."""
        session = self._session()
        if session is None or session.data is None or self._runner is None:
            self._say("Open a model and a data set first.")
            return
        chosen = self.checked_methods()
        if not chosen:
            self._say("Check at least one method.")
            return
        try:
            targets = macs_targets(self.targets.text())
        except InputError as error:
            self._say(str(error))
            return
        if self._scratch is not None:
            self._scratch.cleanup()
        self._scratch = tempfile.TemporaryDirectory(prefix="secateur-compare-")
        request = CompareRequest(
            loaded=session.loaded,
            data=session.data,
            methods=[self.methods[method_id] for method_id in chosen],
            targets=targets,
            out=Path(self._scratch.name) / "compare",
            finetune=FinetuneConfig(epochs=self.epochs.value()),
            recalibrate_bn=self.recalibrate.isChecked(),
            settings=session.settings,
            latency_batches=self.latency_batches,
            latency_runs=self.latency_runs,
        )
        arrived = self._arrived

        def job(progress: Progress) -> dict[str, Any]:
            comparison = Comparison(request)  # traces the model to check the targets: on the worker
            for cell in comparison.cells(progress):
                arrived.emit(cell, copy.deepcopy(comparison.document))
            return comparison.document

        self.cells, self.document, self._finished = [], None, False
        self._base, self._total, self._started = session.model, len(chosen) * len(targets), time.monotonic()
        self.plots.reset(chosen)
        self.plots.set_accuracy_label(_stage(request))
        self.table.setRowCount(0)
        self._say(f"comparing {len(chosen)} method(s) at {len(targets)} target(s): {self._total} cells…")
        if self._runner(JOB_NAME, job, self._done) is None:
            self._say("another job is running: wait for it or cancel it")

    def _add_cell(self, cell: CellResult, document: dict[str, Any]) -> None:
        """A finished cell (on the Qt thread): its point on both plots and its row in the table."""
        self.cells.append(cell)
        self.document = document
        records = [c.record for c in self.cells]
        self.plots.show_cells(records, document.get("baseline"))
        self._add_row(cell.record)
        left = f" · about {_duration(cell.seconds_left)} left" if cell.seconds_left else ""
        self._say(f"{len(self.cells)} of {self._total} cells done{left}")
        self.cell_added.emit(len(self.cells))

    def _add_row(self, record: dict[str, Any]) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        missed = missed_target(record)
        texts = (
            record["method"],
            target_label(record["target"]) + (" (missed)" if missed else ""),
            human_count(record["params"]),
            human_count(record["macs"]),
            f"{final_accuracy(record):.2f}",
            f"{latency_ms(record):.2f}",
        )
        for column, text in enumerate(texts):
            item = QTableWidgetItem(text)
            if column >= 2:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            elif column == 1 and missed:
                item.setToolTip(missed)
            self.table.setItem(row, column, item)

    def _done(self, document: dict[str, Any]) -> None:
        self._finished = True
        self.document = document
        seconds = time.monotonic() - self._started
        self._say(
            f"{len(self.cells)} cells in {_duration(seconds)}. Click a point (or double-click a row) to load that "
            "model into the session; Undo returns to the one before."
        )

    def _ended(self, job: Job) -> None:
        """The comparison's job ended: after a cancel or a failure, say which cells were kept."""
        self._job = None
        if not self._finished:
            how = "cancelled" if job.cancel_requested else "stopped"
            self._say(f"{how}: {len(self.cells)} of {self._total} cells finished and kept; click a point to load it")

    # --- loading a cell, exporting ----------------------------------------------------------

    def load(self, index: int) -> None:
        """Load cell ``index``'s model into the session as if it had been applied (a job: copy and measure)."""
        session = self._session()
        if session is None or self._runner is None or not 0 <= index < len(self.cells):
            return
        cell = self.cells[index]
        record, model, base = cell.record, cell.model, self._base
        if model is None:
            self._say("this cell's model was not kept; run the comparison again")
            return
        label = f"{record['method']} {target_label(record['target'])}"

        def job(progress: Progress) -> None:
            adopted = copy.deepcopy(model).to(session.device).eval()  # the tab keeps its own copy for a later click
            session.adopt(adopted, list(record["edits"]), record["method"], base, progress)

        def loaded(_: object) -> None:
            self.plots.select(record)
            self.table.selectRow(index)
            self._say(f"loaded {label}: the layer tree and the before/after table show it; Undo returns")

        self.loading.emit()
        self._runner(f"load {label}", job, loaded)

    def ask_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the comparison report into a folder")
        if folder:
            self.export(Path(folder))

    def export(self, folder: Path) -> None:
        """Write report.html, compare.json and the Pareto plots into ``folder`` (a job: matplotlib draws them)."""
        document = self.document
        if document is None or self._runner is None:
            return

        def job(progress: Progress) -> list[Path]:
            from secateur.core.workflow.compare_report import write_report  # matplotlib: loaded only when needed

            progress("export report", 0, 1)
            write_json_atomic(folder / COMPARE_FILE, document, "export")
            written = [folder / COMPARE_FILE, *write_report(document, folder)]
            progress("export report", 1, 1)
            return written

        self._runner("export report", job, lambda written: self._say(f"wrote {len(written)} files into {folder}"))


def _stage(request: CompareRequest) -> str:
    """Which accuracy the plots draw: the last stage each cell goes through."""
    if request.finetune.epochs:
        return "accuracy after fine-tuning"
    return "accuracy after recalibration" if request.recalibrate_bn else "accuracy after pruning"
