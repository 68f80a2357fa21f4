"""Secateur's main window: layer tree, heatmaps, method panel and results over a core Session."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import pyqtgraph as pg
import torch
import torchvision  # noqa: F401 - imported here, on the Qt thread: a first import in the worker would hold the GIL
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from secateur.app.heatmap import HeatmapPanel
from secateur.app.method_panel import MethodPanel
from secateur.app.relevance_view import ChannelRelevanceView
from secateur.app.report import human_count
from secateur.app.tree_model import NAME_ROLE, ImportanceBarDelegate, LayerTreeModel, SortProxy
from secateur.app.worker import Worker
from secateur.core.common.errors import InputError
from secateur.core.pruning.registry import Registry, load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.train.finetune import EpochRecord, FinetuneConfig
from secateur.core.workflow.session import Session

SWEEP_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
MAX_RECENT = 8
BLOCK_SCORES_NOTE = "a block method: each removable block's score is the bar on its row of the tree"


class MainWindow(QMainWindow):
    """The window. Every action runs a Session method on the worker; widgets change only here."""

    job_done = Signal(str)  # the name of the job that just ended (tests and --screenshot wait on it)

    def __init__(self, registry: Registry | None = None, settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Secateur")
        self.setAcceptDrops(True)
        self.registry = registry or load_registry()
        self.settings = settings or QSettings("Secateur", "Secateur")
        self.session: Session | None = None
        self.scores = Scores()
        self.worker = Worker(self)
        self._job_name = ""
        self._started = 0.0
        self._epochs: list[EpochRecord] = []
        self._pending_success = None  # the success handler of the running job, dropped if it fails

        self.tree_model = LayerTreeModel()
        self.proxy = SortProxy()
        self.proxy.setSourceModel(self.tree_model)
        self.tree = QTreeView()
        self.tree.setModel(self.proxy)
        self.tree.setSortingEnabled(True)
        self.tree.setIndentation(12)
        self.tree.header().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # module order until a header is clicked
        self.proxy.sort(-1)
        self.tree.setItemDelegateForColumn(6, ImportanceBarDelegate(self.tree))
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setSectionResizeMode(6, QHeaderView.ResizeMode.Fixed)
        self.tree.header().resizeSection(6, 74)
        self.tree.header().setStretchLastSection(False)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.heatmap = HeatmapPanel()
        self.panel = MethodPanel(self.registry.methods)
        self.results = QTableWidget(0, 3)
        self.results.setHorizontalHeaderLabels(["", "before", "after"])
        self.results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.curve = pg.PlotWidget(title="accuracy against ratio (no fine-tuning)")
        self.curve.setLabel("bottom", "channel ratio removed")
        self.curve.setLabel("left", "accuracy %")
        self.training = pg.PlotWidget(title="fine-tuning, per epoch")
        self.training.setLabel("bottom", "epoch")
        self.training.addLegend()
        tabs = QTabWidget()
        tabs.addTab(self.results, "Before / after")
        tabs.addTab(self.curve, "Sweep")
        tabs.addTab(self.training, "Fine-tuning")
        self.relevance = ChannelRelevanceView()
        tabs.addTab(self.relevance, "Channel relevance")
        self.tabs = tabs
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.panel)
        right_layout.addWidget(tabs)
        splitter = QSplitter()
        splitter.addWidget(self.tree)
        splitter.addWidget(self.heatmap)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 3)
        splitter.setStretchFactor(2, 3)
        self.splitter = splitter
        self.setCentralWidget(splitter)

        self.device_picker = QComboBox()
        self.device_picker.addItems(["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
        self.device_picker.setCurrentText(str(self.settings.value("device", "cpu")))
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.elapsed = QLabel()
        self.statusBar().addPermanentWidget(QLabel("device"))
        self.statusBar().addPermanentWidget(self.device_picker)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.elapsed)
        self._clock = QTimer(self)
        self._clock.setInterval(500)
        self._clock.timeout.connect(self._tick)
        self._last_fraction = 0.0

        self._build_menus()
        self._connect()
        self._report_failed_plugins()

    # --- set-up ---------------------------------------------------------------------

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, slot in (("Open model…", self.ask_model), ("Open data…", self.ask_data)):
            action = QAction(text, self)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        self.recent_menu = file_menu.addMenu("Open recent")
        self._fill_recent()
        file_menu.addSeparator()
        save = QAction("Save checkpoint…", self)
        save.triggered.connect(self.ask_save)
        file_menu.addAction(save)
        export_menu = file_menu.addMenu("Export")
        for file_format, label in (("onnx", "ONNX…"), ("torchscript", "TorchScript…"), ("pt2", "torch.export…")):
            action = QAction(label, self)
            action.triggered.connect(lambda _=False, f=file_format: self.ask_export(f))
            export_menu.addAction(action)
        file_menu.addSeparator()
        quit_action = QAction("Quit", self)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        prune_menu = self.menuBar().addMenu("&Prune")
        finetune_action = QAction("Fine-tune…", self)
        finetune_action.triggered.connect(self.ask_finetune)
        prune_menu.addAction(finetune_action)
        help_menu = self.menuBar().addMenu("&Help")
        plugins = QAction("Plugins that failed to load", self)
        plugins.triggered.connect(self.show_failed_plugins)
        help_menu.addAction(plugins)
        lock = QAction("Lock this layer's group", self)
        lock.triggered.connect(self._lock_selected)
        override = QAction("Override this layer's ratio…", self)
        override.triggered.connect(self._override_selected)
        self.tree.addAction(lock)
        self.tree.addAction(override)
        self._locked: set[str] = set()
        self._overrides: dict[str, float] = {}

    def _connect(self) -> None:
        self.tree.selectionModel().currentChanged.connect(lambda current, _: self._show_selected(current))
        self.heatmap.group_clicked.connect(self._show_group)
        self.heatmap.channel_clicked.connect(self.relevance.select)
        self.relevance.job_requested.connect(self._run)
        self.relevance.set_source(
            lambda: None if self.session is None else (self.session.model, self.session.data, self.session.device)
        )
        self.panel.run_requested.connect(self.run_method)
        self.panel.cancel_requested.connect(self.worker.cancel)
        self.panel.apply_requested.connect(self.apply_plan)
        self.panel.undo_requested.connect(self.undo)
        self.panel.sweep_requested.connect(self.sweep)
        self.panel.target_value.valueChanged.connect(lambda _: self._preview_plan())
        self.panel.target_kind.currentIndexChanged.connect(lambda _: self._preview_plan())
        self.panel.target_blocks.valueChanged.connect(lambda _: self._preview_plan())
        self.panel.global_ranking.toggled.connect(lambda _: self._preview_plan())
        self.device_picker.currentTextChanged.connect(self._set_device)
        self.worker.progressed.connect(self._on_progress)
        self.worker.partial.connect(self._on_partial)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self.worker.busy_changed.connect(self._on_busy)

    def _report_failed_plugins(self) -> None:
        if self.registry.failed:
            names = ", ".join(failure.plugin for failure in self.registry.failed)
            self.statusBar().showMessage(f"plugins that failed to load: {names} (Help menu)", 15000)

    # --- running jobs ------------------------------------------------------------------

    def _run(self, name: str, job, on_success) -> None:
        if self.worker.busy():
            self.statusBar().showMessage("busy: wait for the current job or cancel it", 5000)
            return
        self._job_name = name
        self._started = time.monotonic()
        self._last_fraction = 0.0
        self.progress.setValue(0)
        self._clock.start()
        self.statusBar().showMessage(f"{name}…")

        def finished(result: Any) -> None:
            self.worker.succeeded.disconnect(finished)
            on_success(result)
            self.statusBar().showMessage(f"{name}: done in {time.monotonic() - self._started:.1f} s", 8000)
            self.job_done.emit(name)

        self.worker.succeeded.connect(finished)
        self._pending_success = finished
        self.worker.start(job)

    def _on_busy(self, busy: bool) -> None:
        self.panel.set_running(busy)
        if not busy:
            self._clock.stop()
            self._tick()

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self._last_fraction = done / max(1, total)
        self.progress.setFormat(f"{stage} %p%")
        self.progress.setValue(int(100 * self._last_fraction))

    def _tick(self) -> None:
        if not self._started:
            return
        elapsed = time.monotonic() - self._started
        text = f"{elapsed:.0f} s"
        if self.worker.busy() and self._last_fraction > 0.02:
            text += f", about {elapsed * (1 - self._last_fraction) / self._last_fraction:.0f} s left"
        self.elapsed.setText(text)

    def _on_failed(self, message: str, details: str) -> None:
        self._disconnect_pending()
        box = QMessageBox(QMessageBox.Icon.Warning, "Secateur", message, parent=self)
        box.setDetailedText(details)
        box.setObjectName("error-dialog")
        box.open()
        self.statusBar().showMessage(f"{self._job_name} failed: {message.splitlines()[0]}", 10000)
        self.job_done.emit(self._job_name)

    def _on_cancelled(self) -> None:
        self._disconnect_pending()
        self.statusBar().showMessage(f"{self._job_name} cancelled; nothing was changed", 8000)
        self.job_done.emit(self._job_name)

    def _disconnect_pending(self) -> None:
        pending = self._pending_success
        if pending is not None:
            with contextlib.suppress(RuntimeError, TypeError):
                self.worker.succeeded.disconnect(pending)
            self._pending_success = None

    def show_error(self, message: str) -> None:
        QMessageBox.warning(self, "Secateur", message)

    # --- opening ---------------------------------------------------------------------------

    def open(self, model_spec: str, data_spec: str | None = "demo") -> None:
        """Load a model (and data) in the background, then show its tree."""
        device = torch.device(self.device_picker.currentText())

        def job(progress, on_partial):
            session = Session.open(model_spec, data_spec, device)
            return session, session.tree()

        self._run("open", job, lambda result: self._opened(model_spec, *result))

    def _opened(self, spec: str, session: Session, tree) -> None:
        self.session = session
        self.scores = Scores()
        self.tree_model.set_tree(tree)
        self.tree.expandToDepth(0)
        self.heatmap.show_overview([])
        self.heatmap.show_group("", None)
        self.setWindowTitle(f"Secateur: {spec}" + (f" on {session.data.spec}" if session.data else ""))
        self.panel.sweep_button.setEnabled(session.data is not None)
        self.panel.undo_button.setEnabled(bool(session.history))
        self._remember(spec)

    def ask_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a model", "", "Checkpoints (*.safetensors);;Python files (*.py)"
        )
        if not path:
            return
        if path.endswith(".py"):
            factory, ok = QInputDialog.getText(self, "Factory", "Name of the function that builds the model:")
            if not ok or not factory:
                return
            path = f"{path}:{factory}"
        self.open(path, self.session.data.spec if self.session and self.session.data else "demo")

    def ask_data(self) -> None:
        spec, ok = QInputDialog.getText(
            self, "Open data", "Data SPEC (demo, imagefolder:DIR, cifar10:DIR, …):", text="demo"
        )
        if ok and spec and self.session is not None:
            self.open(self.session.loaded.source or self.session.loaded.spec.text(), spec)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for url in event.mimeData().urls():
            if url.toLocalFile().endswith(".safetensors"):
                self.open(url.toLocalFile(), self.session.data.spec if self.session and self.session.data else "demo")
                return
        self.show_error("Drop a Secateur checkpoint (.safetensors) to open it.")

    def _remember(self, spec: str) -> None:
        recent = [s for s in self.settings.value("recent", [], list) if s != spec]
        self.settings.setValue("recent", [spec, *recent][:MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for spec in self.settings.value("recent", [], list):
            action = QAction(spec, self)
            action.triggered.connect(lambda _=False, s=spec: self.open(s))
            self.recent_menu.addAction(action)

    def _set_device(self, name: str) -> None:
        self.settings.setValue("device", name)
        if self.session is not None:
            self.session.settings = dataclasses.replace(self.session.settings, device=torch.device(name))

    # --- scoring and planning --------------------------------------------------------------

    def run_method(self) -> None:
        if self.session is None:
            self.show_error("Open a model first.")
            return
        method, params = self.panel.method(), self.panel.params()
        session = self.session
        self.scores = Scores()

        def job(progress, on_partial):
            return session.score(method, params, progress, on_partial)

        self._run(f"score with {method.id}", job, self._scored)

    def _on_partial(self, value: Any) -> None:
        """Partial results of whichever job runs: scores, sweep points or a fine-tuning epoch."""
        if isinstance(value, Scores):
            self.scores.update(value)
            self._draw_scores()
        elif isinstance(value, EpochRecord):
            self._epochs.append(value)
            epochs = [record.epoch for record in self._epochs]
            self.training.clear()
            self.training.plot(epochs, [r.val_accuracy for r in self._epochs], symbol="o", name="validation accuracy %")
            self.training.plot(
                epochs, [100 * r.train_loss for r in self._epochs], symbol="t", pen="r", name="training loss × 100"
            )
        elif isinstance(value, list):
            self._draw_sweep(value)

    def _scored(self, scores: Scores) -> None:
        self.scores = scores
        self._draw_scores()
        self._preview_plan()

    def _draw_scores(self) -> None:
        arrays = [(gid, values.numpy()) for gid, values in self.scores.groups.items()]
        self.heatmap.show_overview(arrays)
        means = {}
        for gid, values in arrays:
            means[gid] = float(values.mean())
        top = max(means.values(), default=1.0) or 1.0
        self.tree_model.show_importance({gid: mean / top for gid, mean in means.items()})
        self.tree_model.show_block_scores(self.scores.blocks)
        if self.scores.blocks and not self.scores.groups:
            self.heatmap.show_note(BLOCK_SCORES_NOTE)
        current = self.tree.currentIndex()
        if current.isValid():
            self._show_selected(current)

    def _show_selected(self, index) -> None:
        name = self.proxy.mapToSource(index.siblingAtColumn(0)).data(NAME_ROLE)
        group = self.tree_model.group_of(name) if name else None
        if name in self.scores.blocks:
            self.heatmap.show_note(f"block {name}: score {self.scores.blocks[name]:.4g} (the bar on its tree row)")
            return
        if group is None and self.scores.blocks and not self.scores.groups:
            self.heatmap.show_note(BLOCK_SCORES_NOTE)
            return
        if group is None:
            self.heatmap.show_group(name or "", None)
            return
        self._show_group(group)

    def _show_group(self, group: str) -> None:
        values = self.scores.groups.get(group)
        self.heatmap.show_group(group, None if values is None else values.numpy())

    def _preview_plan(self) -> None:
        if self.session is None or not (self.scores.groups or self.scores.blocks) or self.worker.busy():
            return
        if not self.session.planning_ready():  # tracing belongs to the worker; scoring prepares it
            return
        options = self.panel.options()
        options.locked = tuple(self._locked)
        options.overrides = dict(self._overrides)
        try:
            plan = self.session.make_plan(self.panel.target(), options, self.panel.method().id)
        except InputError as error:
            self.panel.error.setText(str(error))
            self.panel.apply_button.setEnabled(False)
            return
        self.panel.error.clear()
        self.tree_model.show_plan({gid: (len(g.kept), g.total) for gid, g in plan.groups.items()})
        self.tree_model.show_removed_blocks(plan.blocks_removed)
        self.panel.apply_button.setEnabled(True)
        self.statusBar().showMessage(
            f"plan: {human_count(plan.predicted_params)} params, {human_count(plan.predicted_macs)} MACs after pruning",
            10000,
        )

    def select_layer(self, name: str) -> bool:
        """Select a layer's row by its module path (expanding its parents); False when it is not there."""
        matches = self.tree_model.match(
            self.tree_model.index(0, 0), NAME_ROLE, name, 1, Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive
        )
        if not matches:
            return False
        index = self.proxy.mapFromSource(matches[0])
        self.tree.scrollTo(index)
        self.tree.setCurrentIndex(index)
        return True

    def _selected_group(self) -> str | None:
        index = self.tree.currentIndex()
        if not index.isValid():
            return None
        name = self.proxy.mapToSource(index.siblingAtColumn(0)).data(NAME_ROLE)
        return self.tree_model.group_of(name)

    def _lock_selected(self) -> None:
        group = self._selected_group()
        if group:
            self._locked ^= {group}
            self._preview_plan()

    def _override_selected(self) -> None:
        group = self._selected_group()
        if not group:
            return
        ratio, ok = QInputDialog.getDouble(self, "Override", f"Fraction of {group} to remove:", 0.5, 0.0, 0.95, 2)
        if ok:
            self._overrides[group] = ratio
            self._preview_plan()

    # --- applying, undo, sweep, fine-tuning, saving ------------------------------------------

    def apply_plan(self) -> None:
        if self.session is None or self.session.plan is None:
            return
        session, method, params = self.session, self.panel.method(), self.panel.params()

        def job(progress, on_partial):
            before, after = session.apply(method, params, progress)
            return before, after, session.tree()

        self._run("apply", job, self._applied)

    def _applied(self, result) -> None:
        before, after, tree = result
        self.scores = Scores()
        self.tree_model.set_tree(tree)
        self.tree.expandToDepth(0)
        self.heatmap.show_overview([])
        self.show_metrics(before, after)
        self.panel.apply_button.setEnabled(False)
        self.panel.undo_button.setEnabled(True)

    def show_metrics(self, before, after) -> None:
        rows = [
            ("accuracy %", lambda m: f"{m.accuracy:.2f}"),
            ("loss", lambda m: f"{m.loss:.4f}"),
            ("params", lambda m: human_count(m.params)),
            ("MACs", lambda m: human_count(m.macs)),
            ("latency ms", lambda m: f"{m.latency.median:.2f}"),
        ]
        self.results.setRowCount(len(rows))
        for row, (label, fmt) in enumerate(rows):
            self.results.setItem(row, 0, QTableWidgetItem(label))
            self.results.setItem(row, 1, QTableWidgetItem(fmt(before) if before else "-"))
            self.results.setItem(row, 2, QTableWidgetItem(fmt(after) if after else "-"))

    def undo(self) -> None:
        if self.session is None or self.worker.busy():
            return
        session = self.session

        def job(progress, on_partial):
            session.undo()
            return session.tree()

        def undone(tree) -> None:
            self.scores = Scores()
            self.tree_model.set_tree(tree)
            self.tree.expandToDepth(0)
            self.results.setRowCount(0)
            self.panel.undo_button.setEnabled(bool(session.history))

        self._run("undo", job, undone)

    def sweep(self) -> None:
        if self.session is None or not self.scores.groups:
            self.show_error("Run a method first: the sweep prunes by its scores.")
            return
        session, scores, options = self.session, self.scores, self.panel.options()

        def job(progress, on_partial):
            return session.sweep(scores, SWEEP_RATIOS, options, progress, on_partial)

        self._run("sweep", job, self._draw_sweep)

    def _draw_sweep(self, points) -> None:
        self.curve.clear()
        self.curve.plot([p[0] for p in points], [p[1] for p in points], symbol="o")

    def ask_finetune(self) -> None:
        if self.session is None or self.session.data is None:
            self.show_error("Open a model and a data set first.")
            return
        epochs, ok = QInputDialog.getInt(self, "Fine-tune", "Epochs:", 1, 1, 200)
        if ok:
            self.finetune(epochs)

    def finetune(self, epochs: int) -> None:
        session = self.session
        assert session is not None
        self.training.clear()
        self._epochs: list[EpochRecord] = []

        def job(progress, on_partial):
            return session.finetune(FinetuneConfig(epochs=epochs), progress, on_epoch=on_partial)

        def done(result) -> None:
            self.panel.undo_button.setEnabled(True)
            self.statusBar().showMessage(f"fine-tuned: best epoch {result.best_epoch}", 8000)

        self._run(f"fine-tune {epochs} epoch(s)", job, done)

    def ask_save(self) -> None:
        if self.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save checkpoint", "pruned.safetensors", "Checkpoints (*.safetensors)"
        )
        if path:
            self.save(path)

    def save(self, path: str) -> None:
        session = self.session
        assert session is not None
        self._run("save", lambda progress, on_partial: session.save(path), lambda p: None)

    def ask_export(self, file_format: str) -> None:
        if self.session is None:
            return
        suffix = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}[file_format]
        path, _ = QFileDialog.getSaveFileName(self, f"Export {file_format}", f"model{suffix}")
        if path:
            session = self.session
            self._run("export", lambda progress, on_partial: session.export(file_format, path), lambda p: None)

    def show_failed_plugins(self) -> None:
        if not self.registry.failed:
            QMessageBox.information(self, "Plugins", "Every installed plugin loaded.")
            return
        box = QMessageBox(
            QMessageBox.Icon.Warning, "Plugins", f"{len(self.registry.failed)} plugin(s) failed to load:", parent=self
        )
        box.setInformativeText("\n".join(failure.plugin for failure in self.registry.failed))
        box.setDetailedText("\n\n".join(f"{f.plugin}\n{f.error}" for f in self.registry.failed))
        box.open()

    def resizeEvent(self, event) -> None:
        """Keep the three panes at 50/26/24% of the width as the window is resized."""
        super().resizeEvent(event)
        width = self.width()
        self.splitter.setSizes([int(width * 0.50), int(width * 0.26), int(width * 0.24)])

    def closeEvent(self, event) -> None:
        self.worker.cancel()
        self.worker.wait()
        super().closeEvent(event)


def grab_png(window: MainWindow, path: str | Path) -> None:
    """Render the window to a PNG (works offscreen)."""
    window.grab().save(str(path), "PNG")
