"""Secateur's main window: layer tree, heatmaps, method panel and results, all redrawn from a core Session.

The window keeps no copy of the session's state. Every action is a Session
call run as its own job (``Job``) off the Qt thread; the session announces
what changed (psygnal events, relayed and throttled by ``SessionBridge``) and
every view redraws from the session's state. Controls follow the job state.
"""

from __future__ import annotations

import functools
import gc
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyqtgraph as pg
import torch
import torchvision  # noqa: F401 - imported here, on the Qt thread: a first import in the worker would hold the GIL
from PySide6.QtCore import QSettings, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QTabWidget,
)

from secateur.app.block_view import BlockView
from secateur.app.compare_tab import CompareTab
from secateur.app.controls import enable as _enable
from secateur.app.docks import Docks
from secateur.app.finetune_dialog import FinetuneChoice, FinetuneDialog
from secateur.app.heatmap import HeatmapPanel
from secateur.app.method_panel import MethodPanel
from secateur.app.open_dialog import DATA_LAYOUTS, ModelRequest, OpenModelDialog, open_session
from secateur.app.plot_cache import cache_axes
from secateur.app.relevance_view import ChannelRelevanceView
from secateur.app.report import human_count
from secateur.app.results import MEASURING, ResultsView, Side, caption, metric_rows
from secateur.app.session_bridge import SessionBridge
from secateur.app.status import StatusBar
from secateur.app.time_left import TimeLeft
from secateur.app.training_view import TrainingView
from secateur.app.tree_model import NAME_ROLE, LayerTreeModel, SortProxy, TreeRows, build_rows
from secateur.app.tree_view import LayerTreeView
from secateur.app.worker import Job, favour_the_event_loop
from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.graph.layer_tree import LayerTree
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import Registry, load_registry
from secateur.core.train.finetune import FinetuneConfig
from secateur.core.workflow.finetune_run import torchrun_command, torchrun_text
from secateur.core.workflow.session import Session, TrainingLog

SWEEP_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
MAX_RECENT = 8
PLOTTED = {"model", "scores", "plan"}  # the changes the overview strip and the heatmap show
# A real timer, not 0: PySide's zero-delay single shot is a posted call that Qt runs in the same batch
# as the job's end and its paints, so the window would not answer in between
LATER_TURN_MS = 1
TAB_SWITCH_DELAY_MS = 10  # under a frame: the loop serves what came due meanwhile (at 1 ms the paint often ran first)
ELAPSED_ROOM = "000 s · fine-tuning: about 000 s left"  # the clock label's fixed width: its usual widest text
PREVIEW_DELAY_MS = 150  # the plan preview waits for the target to stop changing
PROGRESS_TEXT_MARGIN = 8  # px the progress bar's style keeps on each side of its text
BLOCK_SCORES_NOTE = "a block method: each removable block's score is the bar on its row of the tree"


class MainWindow(QMainWindow):
    """The window. Every action runs a Session method as a job; views redraw from the session's events."""

    job_done = Signal(str)  # the name of the job that just ended (tests and --screenshot wait on it)
    preview_done = Signal()  # a plan preview ended

    def __init__(self, registry: Registry | None = None, settings: QSettings | None = None) -> None:
        super().__init__()
        favour_the_event_loop()
        self.setWindowTitle("Secateur")
        self.setAcceptDrops(True)
        self.registry = registry or load_registry()
        self.settings = settings or QSettings("Secateur", "Secateur")
        self.session: Session | None = None
        self.job: Job | None = None
        self._queued: tuple[Job, Callable[[Any], None] | None] | None = None
        self._preview_pending = False
        self._plan_error = ""
        self._shown_tree: LayerTree | None = None
        self._built: TreeRows | None = None  # rows built where the model changed (``_prebuild_rows``)
        self._plots_due: set[str] = set()  # "overview", "heatmap": what a redraw left to draw (``_draw_due``)
        self._blocks_due = False  # the hidden block view has changes to show when it is shown
        self._plots_later = False  # while the bridge redraws: plots in later turns, after the rest has painted
        self._started = 0.0
        self.time_left = TimeLeft()
        self.bridge = SessionBridge(self)
        self._saved_model: object = None  # the model last saved (or as opened): nothing to lose while it is current
        self._saved_path = ""  # where it was saved (a cluster fine-tunes that file)
        self.confirm_unsaved = True  # ask before quitting or opening over an unsaved pruned model

        self.tree_model = LayerTreeModel()
        self.proxy = SortProxy()
        self.proxy.setSourceModel(self.tree_model)
        self.tree = LayerTreeView()
        self.tree.setModel(self.proxy)
        self.proxy.sort(-1)
        self.heatmap = HeatmapPanel()
        self.block_view = BlockView()
        self.centre = QStackedWidget()  # the channel heatmap, or the block view for a block method
        self.centre.addWidget(self.heatmap)
        self.centre.addWidget(self.block_view)
        self.panel = MethodPanel(self.registry.methods)
        self.results = ResultsView()
        self.curve = pg.PlotWidget(title="accuracy against ratio (no fine-tuning)")
        self.curve.setLabel("bottom", "channel ratio removed")
        self.curve.setLabel("left", "accuracy %")
        self.sweep_line = self.curve.plot(symbol="o")
        self.curve.setRange(xRange=(0.0, 1.0), yRange=(0.0, 100.0))  # fixed axes: a growing curve redraws no ticks
        self.curve.disableAutoRange()
        cache_axes(self.curve.getPlotItem())
        self.training = TrainingView()
        self.relevance = ChannelRelevanceView()
        tabs = QTabWidget()
        tabs.setUsesScrollButtons(False)  # narrow: the titles elide rather than hide tabs behind arrows
        tabs.setElideMode(Qt.TextElideMode.ElideRight)
        for widget, title, tip in (
            (self.results, "Before/after", "the model as opened against the current one"),
            (self.curve, "Sweep", "accuracy against ratio, no fine-tuning"),
            (self.training, "Fine-tuning", "loss per step and accuracy per epoch"),
            (self.relevance, "Relevance", "channel relevance over a training image"),
        ):
            tabs.setTabToolTip(tabs.addTab(widget, title), tip)
        self.tabs = tabs
        self.setStatusBar(StatusBar())
        self.docks = Docks(self, self.settings)
        self.setCentralWidget(self.centre)
        self.docks.add("layers", "Layers", self.tree, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.docks.add("method", "Method", self.panel, Qt.DockWidgetArea.RightDockWidgetArea)  # its form scrolls
        self.docks.add("results", "Results", tabs, Qt.DockWidgetArea.RightDockWidgetArea)
        self.compare = CompareTab(self.registry.methods)
        self.compare.set_host(self._run, lambda: self.session)
        self.docks.add("compare", "Compare", self.compare, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.tabifyDockWidget(self.docks["layers"], self.docks["compare"])  # the tall left column, a tab away
        self.docks["layers"].raise_()

        self.device_picker = QComboBox()
        self.device_picker.addItems(["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
        self.device_picker.setCurrentText(str(self.settings.value("device", "cpu")))
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setMinimumWidth(150)  # "latency 16%" and the like, whole
        self.progress.setFormat("idle")
        self.elapsed = QLabel()
        # a fixed size: a label whose width follows its text made Qt lay the whole window out again at every
        # phase change (6-8 ms, then a 12-17 ms paint); longer texts elide, whole in the tooltip (_show_elapsed)
        metrics = self.elapsed.fontMetrics()
        self.elapsed.setFixedSize(metrics.horizontalAdvance(ELAPSED_ROOM), max(metrics.height(), 16))
        self.statusBar().addPermanentWidget(QLabel("device"))
        self.statusBar().addPermanentWidget(self.device_picker)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.elapsed)
        self._clock = QTimer(self)
        self._clock.setInterval(500)
        self._clock.timeout.connect(self._tick)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self.preview_plan)

        self._build_menus()
        self._connect()
        self._show_centre()
        self._report_failed_plugins()
        self._update_controls()
        self.docks.restore()
        # Everything alive now (modules, classes, widgets) lives as long as the window: keep it out of
        # the cyclic collector, so the collection before each job (see Job.start) takes milliseconds, not a second.
        gc.freeze()

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
        self.save_action = QAction("Save checkpoint…", self)
        self.save_action.triggered.connect(self.ask_save)
        file_menu.addAction(self.save_action)
        self.export_menu = file_menu.addMenu("Export")
        for file_format, label in (("onnx", "ONNX…"), ("torchscript", "TorchScript…"), ("pt2", "torch.export…")):
            action = QAction(label, self)
            action.triggered.connect(lambda _=False, f=file_format: self.ask_export(f))
            self.export_menu.addAction(action)
        file_menu.addSeparator()
        quit_action = QAction("Quit", self)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        prune_menu = self.menuBar().addMenu("&Prune")
        self.finetune_action = QAction("Fine-tune…", self)
        self.finetune_action.triggered.connect(self.ask_finetune)
        prune_menu.addAction(self.finetune_action)
        cluster_action = QAction("Fine-tune command for a cluster…", self)
        cluster_action.triggered.connect(self.ask_cluster_command)
        prune_menu.addAction(cluster_action)
        self.recalibrate_action = QAction("Recalibrate BatchNorm", self)
        self.recalibrate_action.triggered.connect(self.recalibrate)
        prune_menu.addAction(self.recalibrate_action)
        view_menu = self.menuBar().addMenu("&View")
        for dock in self.docks.all():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        reset = QAction("Reset layout", self)
        reset.triggered.connect(self.docks.reset)
        view_menu.addAction(reset)
        help_menu = self.menuBar().addMenu("&Help")
        plugins = QAction("Plugins that failed to load", self)
        plugins.triggered.connect(self.show_failed_plugins)
        help_menu.addAction(plugins)

    def _connect(self) -> None:
        self.tree.selectionModel().currentChanged.connect(lambda current, _: self._show_selected(current))
        self.tree.lock_requested.connect(self.set_locked)
        self.tree.ratio_requested.connect(self.ask_override)
        self.tree.clear_requested.connect(lambda group: self.set_override(group, None))
        self.heatmap.group_clicked.connect(self.select_group)
        self.block_view.block_clicked.connect(self.select_layer)
        self.heatmap.channel_clicked.connect(self.relevance.select)
        self.relevance.job_requested.connect(self._run)
        self.relevance.set_source(
            lambda: None if self.session is None else (self.session.model, self.session.data, self.session.device)
        )
        self.panel.run_requested.connect(self.run_method)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.apply_requested.connect(self.apply_plan)
        self.panel.undo_requested.connect(self.undo)
        self.panel.sweep_requested.connect(self.sweep)
        self.panel.params_checked.connect(lambda _: self._update_controls())
        self.panel.picker.currentTextChanged.connect(self._method_changed)
        for changed in (
            self.panel.target_value.valueChanged,
            self.panel.target_kind.currentIndexChanged,
            self.panel.target_blocks.valueChanged,
            self.panel.global_ranking.toggled,
            self.panel.latency_batch.valueChanged,
            self.panel.latency_table.toggled,
        ):
            changed.connect(lambda _: self._preview_timer.start())
        self.results.measure_requested.connect(self.measure_again)
        self.compare.cancel_requested.connect(self.cancel)
        self.compare.loading.connect(lambda: self.tabs.setCurrentWidget(self.results))
        self.device_picker.currentTextChanged.connect(self._set_device)
        self.bridge.changed.connect(self._redraw_changes)
        self.bridge.notice.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.bridge.job.connect(lambda _: self._update_controls())

    def _report_failed_plugins(self) -> None:
        if self.registry.failed:
            names = ", ".join(failure.plugin for failure in self.registry.failed)
            self.statusBar().showMessage(f"plugins that failed to load: {names} (Help menu)", 15000)

    # --- running jobs ------------------------------------------------------------------

    def busy(self) -> bool:
        """Whether a job the user asked for runs (a plan preview does not count)."""
        return self.job is not None and not self.job.quiet

    def _run(
        self, name: str, func: Callable[[Progress], Any], on_success: Callable[[Any], None] | None = None
    ) -> Job | None:
        """Run ``func(progress)`` as its own job: queued behind a plan preview, refused (and said so) behind another."""
        job = Job(name, func)
        if self.job is not None and not self.job.quiet:
            self.statusBar().showMessage(f"busy: {self.job.name} is running; wait for it or cancel it", 5000)
            return None
        if self.job is not None:
            self._queued = (job, on_success)
            self.statusBar().showMessage(f"{name} queued: it starts when the plan preview ends")
            return job
        self._start(job, on_success)
        return job

    def _start(self, job: Job, on_success: Callable[[Any], None] | None) -> None:
        self.job = job
        job.progressed.connect(lambda stage, done, total: self._on_progress(job, stage, done, total))
        job.succeeded.connect(lambda result: self._ended(job, "done", result, on_success))
        job.failed.connect(lambda message, details: self._ended(job, "failed", (message, details)))
        job.cancelled.connect(lambda: self._ended(job, "cancelled"))
        if not job.quiet:
            self._started = time.monotonic()
            self.time_left = TimeLeft()
            self.progress.setValue(0)
            self.progress.setFormat(f"{job.name}…")
            self.elapsed.clear()
            self._clock.start()
            self.statusBar().showMessage(f"{job.name}…")
            if self.session is not None:
                self.session.set_job(job.name)
        self._update_controls()
        job.start()

    def cancel(self) -> None:
        """Ask the running job to stop, and say so at once; the job stops at its next check."""
        job = self.job
        if job is None or job.quiet or job.cancel_requested:
            return
        job.cancel()
        self.progress.setFormat("cancelling…")
        self.statusBar().showMessage(f"cancelling {job.name}…")
        self._update_controls()

    def _on_progress(self, job: Job, stage: str, done: int, total: int) -> None:
        if job is not self.job or job.quiet:
            return
        new_phase = stage != self.time_left.stage
        self.time_left.update(stage, done, total, time.monotonic())
        if new_phase:
            self._tick()  # the clock's label names the phase now, not at its next second
        if not job.cancel_requested:
            self._show_stage(stage)
        # QProgressBar.setValue repaints at once; with updates off, re-enabling them posts the paint instead,
        # which joins the window's next one (0.6 ms per report on the demo's fine-tuning, 0.3 ms this way)
        self.progress.setUpdatesEnabled(False)
        self.progress.setValue(int(100 * done / max(1, total)))
        self.progress.setUpdatesEnabled(True)

    def _show_stage(self, stage: str) -> None:
        """The stage on the progress bar, shortened in the middle to fit its width; the whole text as tooltip."""
        metrics = self.progress.fontMetrics()
        room = self.progress.width() - metrics.horizontalAdvance(" 100%") - 2 * PROGRESS_TEXT_MARGIN
        self.progress.setFormat(metrics.elidedText(stage, Qt.TextElideMode.ElideMiddle, max(room, 0)) + " %p%")
        self.progress.setToolTip(stage)

    def _tick(self) -> None:
        if self.busy():
            now = time.monotonic()
            phase = self.time_left.text(now)
            self._show_elapsed(f"{now - self._started:.0f} s" + (f" · {phase}" if phase else ""))

    def _show_elapsed(self, text: str) -> None:
        """The clock label's text, elided in the middle to its fixed width, the whole text as its tooltip."""
        shown = self.elapsed.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, self.elapsed.width())
        self.elapsed.setText(shown)
        self.elapsed.setToolTip(text if shown != text else "")

    def _ended(
        self, job: Job, outcome: str, payload: Any = None, on_success: Callable[[Any], None] | None = None
    ) -> None:
        if job is not self.job:
            return
        self.job = None
        seconds = time.monotonic() - self._started
        if not job.quiet:
            self._clock.stop()
            self.progress.setValue(0)
            self.progress.setFormat("idle")
            self.progress.setToolTip("")
            self._show_elapsed(f"{job.name}: {seconds:.1f} s")
            if self.session is not None:
                self.session.set_job("")
        self._plots_later = True  # the plots are drawn (and painted) a turn later: the window answers in between
        try:
            self.bridge.flush()  # the views show the job's last changes before its end is reported
        finally:
            self._plots_later = False
        report = functools.partial(self._report_end, job, outcome, payload, on_success, seconds)
        if self._plots_due:  # each plot in its own turn: the two paints together took 15-18 ms
            self._in_turns(*self._plot_steps(), report)
        else:
            report()

    def _in_turns(self, *steps: Callable[[], None]) -> None:
        """Run ``steps`` in order, each on a timer turn of its own (``LATER_TURN_MS``).

        What a step changes is painted in its own batch of events, and the window answers between steps.
        """
        if steps:
            QTimer.singleShot(LATER_TURN_MS, self, lambda: (steps[0](), self._in_turns(*steps[1:])))

    def _report_end(
        self, job: Job, outcome: str, payload: Any, on_success: Callable[[Any], None] | None, seconds: float
    ) -> None:
        """Say how a job ended, once every view shows its results (the plots included)."""
        self._draw_plots()
        if outcome == "done":
            if not job.quiet:
                self.statusBar().showMessage(f"{job.name}: done in {seconds:.1f} s", 8000)
            if on_success is not None:
                on_success(payload)  # may say more in the status bar (a refused target)
        elif outcome == "cancelled":
            self.statusBar().showMessage(f"{job.name} cancelled; nothing was changed", 8000)
        else:
            self._show_failure(job.name, *payload)
        self._update_controls()
        if job.quiet:
            self.preview_done.emit()
        else:
            self.job_done.emit(job.name)
        self._next_job()

    def _next_job(self) -> None:
        if self.job is not None:
            return
        if self._queued is not None:
            job, on_success = self._queued
            self._queued = None
            self._start(job, on_success)
        elif self._preview_pending:
            self._preview_pending = False
            self.preview_plan()

    def _show_failure(self, name: str, message: str, details: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Secateur", message, parent=self)
        box.setDetailedText(details)
        box.setObjectName("error-dialog")
        box.open()
        self.statusBar().showMessage(f"{name} failed: {message.splitlines()[0]}", 10000)

    def show_error(self, message: str) -> None:
        QMessageBox.warning(self, "Secateur", message)

    def _update_controls(self) -> None:
        """Every control from the job state and the session: disabled with the reason, never silently inert."""
        session, panel = self.session, self.panel
        waiting = f"wait: {self.job.name} is running (or cancel it)" if self.busy() else ""
        no_model = "" if session is not None else "open a model first"
        no_data = "" if session is not None and session.data is not None else "open a model and a data set first"
        method = panel.method().id if panel.methods else ""
        plan = session.plan if session is not None else None
        if plan is None:
            no_plan = self._plan_error or f"no plan yet: run {method or 'a method'} first"
        elif (plan.method or session.scored_by) != method:
            no_plan = f"the plan was made with {plan.method}; run {method} first"
        else:
            no_plan = ""
        scores = session.scores if session is not None else None
        no_channels = (
            ""
            if scores is not None and scores.groups and session.scored is not None
            else ("run a channel method first: the sweep prunes by its scores")
        )
        _enable(panel.run_button, waiting or no_model or ("" if panel.params_ok() else "fix the parameters first"))
        _enable(panel.apply_button, waiting or no_model or no_plan)
        _enable(panel.undo_button, waiting or no_model or ("" if session and session.history else "nothing to undo"))
        _enable(panel.sweep_button, waiting or no_data or no_channels)
        cancelling = self.job is not None and self.job.cancel_requested
        _enable(panel.cancel_button, "" if self.busy() and not cancelling else "no job to cancel")
        _enable(panel.picker, waiting)
        _enable(self.device_picker, waiting)
        _enable(self.results.measure_button, waiting or no_data)
        for action in (self.finetune_action, self.recalibrate_action):
            action.setEnabled(not (waiting or no_data))
        self.save_action.setEnabled(not (waiting or no_model))
        self.compare.update_controls(self.job, no_data)
        self.export_menu.setEnabled(not (waiting or no_model))

    # --- drawing from the session ----------------------------------------------------------

    def _redraw_changes(self, names: set[str]) -> None:
        """The bridge's redraw: the plots follow in turns of their own (a job's end adds its report after them)."""
        if self._plots_later:  # inside a job's end: it schedules the plots itself
            self._redraw(names)
            return
        self._plots_later = True
        try:
            self._redraw(names)
        finally:
            self._plots_later = False
        if self._plots_due:
            self._in_turns(*self._plot_steps())

    def draw_now(self) -> None:
        """Show every change now, the plots included (tests, and before a screenshot)."""
        self.bridge.flush()
        self._draw_plots()

    def _redraw(self, names: set[str]) -> None:
        if "model" in names:
            self._draw_model()
        if names & {"model", "scores"}:
            self._draw_scores(plots=False)
        if names & {"model", "plan"}:
            self._draw_plan(heatmap=False)
        if names & PLOTTED:  # once for both scores and plan: the heatmap shows the scores and the plan's outline
            self._plots_due |= {"overview", "heatmap"}
            if not self._plots_later:  # else they are drawn in turns of their own (``_in_turns``)
                self._draw_plots()
        if names & {"model", "choices"}:
            self._draw_choices()
        if names & {"model", "scores", "plan"}:
            self._draw_blocks()
        if names & {"model", "metrics", "history"}:
            self._draw_metrics()
        if "training" in names:
            self.training.show_log(self.session.training if self.session else None)
        if "sweep" in names:
            self._draw_sweep()
        self._update_controls()

    def _prebuild_rows(self, session: Session) -> None:
        """Build the tree's rows for ``session``'s current tree, in whichever thread changed the model.

        A job's worker (open, apply, undo) takes the 5 ms of building resnet50's rows off the Qt thread;
        ``_draw_model`` uses them if they belong to the tree it draws.
        """
        tree = session.tree
        if tree is not None:
            self._built = build_rows(tree)

    def _model_replaced(self) -> None:  # any thread: the session's ``model`` event
        if self.session is not None:
            self._prebuild_rows(self.session)

    def _draw_model(self) -> None:
        tree = self.session.tree if self.session is not None else None
        built, self._built = self._built, None  # rows are used once: the model owns (and deletes) them
        if tree is self._shown_tree:
            return
        same_rows = tree is not None and self._shown_tree is not None and _rows_of(tree) == _rows_of(self._shown_tree)
        self._shown_tree = tree
        if same_rows:  # fine-tuned or recalibrated: the same rows; rebuilding them took 9 ms on the demo
            self.relevance.refresh()
            return
        selected = self._selected_name()
        if tree is None:
            self.tree_model.removeRows(0, self.tree_model.rowCount())
        else:
            self.tree_model.set_tree(built if built is not None and built.tree is tree else build_rows(tree))
            self.tree.expandToDepth(0)
            if selected:
                self.select_layer(selected)
        self.relevance.refresh()

    def _draw_scores(self, plots: bool = True) -> None:
        """The tree's importance bars; with ``plots``, the overview strip and the heatmap too."""
        scores = self.session.scores if self.session is not None else None
        groups = scores.groups if scores is not None else {}
        blocks = scores.blocks if scores is not None else {}
        means = {gid: float(values.mean()) for gid, values in groups.items()}
        top = max(means.values(), default=1.0) or 1.0
        self.tree_model.show_scores({gid: mean / top for gid, mean in means.items()}, blocks)
        if plots:
            self._plots_due |= {"overview", "heatmap"}
            self._draw_plots()

    def _draw_plots(self) -> None:
        """The overview strip and the selected group's heatmap, if a redraw left them to draw."""
        for step in self._plot_steps():
            step()

    def _plot_steps(self) -> tuple[Callable[[], None], Callable[[], None]]:
        return functools.partial(self._draw_due, "overview"), functools.partial(self._draw_due, "heatmap")

    def _draw_due(self, plot: str) -> None:
        """Draw ``plot`` if a redraw left it to draw; a turn that comes after ``draw_now`` has nothing to do."""
        if plot not in self._plots_due:
            return
        self._plots_due.discard(plot)
        if plot == "overview":
            self._draw_overview()
        else:
            self._draw_heatmap()

    def _draw_overview(self) -> None:
        """The overview strip: one row per scored group."""
        scores = self.session.scores if self.session is not None else None
        arrays = [(gid, values.numpy()) for gid, values in scores.groups.items()] if scores is not None else []
        tree = self.session.tree if self.session is not None else None
        self.heatmap.show_overview(arrays, {g.id: g.out_layers for g in tree.groups} if tree is not None else None)

    def _draw_heatmap(self) -> None:
        """The selected layer's group with the plan's outline; with nothing selected, what to do."""
        scores = self.session.scores if self.session is not None else None
        current = self.tree.currentIndex()
        if current.isValid():
            self._show_selected(current)
        elif scores is not None and scores.blocks and not scores.groups:
            self.heatmap.show_note(BLOCK_SCORES_NOTE)
        else:
            self.heatmap.show_group("", None, **self._why_empty())

    def _draw_plan(self, heatmap: bool = True) -> None:
        plan = self.session.plan if self.session is not None else None
        if heatmap:
            self._draw_heatmap()  # the heatmap's removed outline follows the plan
        if plan is None:
            self.tree_model.show_plan({})
            self.panel.plan_info.setText(self._plan_error)
            return
        self.tree_model.show_plan({gid: (len(g.kept), g.total) for gid, g in plan.groups.items()}, plan.blocks_removed)
        timed = f"; {plan.notes[-1]}" if plan.target.kind == "latency" and plan.notes else ""  # what was measured
        self.panel.plan_info.setText(
            f"plan ({plan.method}): {human_count(plan.predicted_params)} params, "
            f"{human_count(plan.predicted_macs)} MACs after pruning{timed}"
        )

    def _show_centre(self) -> None:
        """A block method's work is the block view; a channel method's is the heatmap."""
        blocks = bool(self.panel.methods) and self.panel.method().granularity == "block"
        self.centre.setCurrentWidget(self.block_view if blocks else self.heatmap)
        if blocks and self._blocks_due:
            self._draw_blocks()

    def _draw_blocks(self) -> None:
        """The block view, when it is the one shown; hidden, it is drawn when shown (1-5 ms saved per redraw)."""
        if self.centre.currentWidget() is not self.block_view:
            self._blocks_due = True
            return
        self._blocks_due = False
        session = self.session
        tree = session.tree if session is not None else None
        scores = session.scores if session is not None else None
        plan = session.plan if session is not None else None
        self.block_view.show_blocks(
            tree.blocks if tree is not None else [],
            scores.blocks if scores is not None else {},
            plan.blocks_removed if plan is not None else (),
            session.plan_options(plan.options if plan is not None else self.panel.options()) if session else None,
            complete=session is None or session.scored is not None or scores is None,
        )

    def _draw_choices(self) -> None:
        session = self.session
        locked, overrides = (session.locked, session.overrides) if session is not None else (frozenset(), {})
        self.tree_model.show_choices(locked, overrides)
        self.tree.show_override_column(self.tree_model.has_choices)

    def _draw_metrics(self) -> None:
        session = self.session
        if session is None:
            self.results.show_rows([], caption(None, None))
            return
        root_tree = session.history[0].tree if session.history else session.tree
        before = Side(session.metrics_before, *(_size(root_tree)))
        after = Side(session.metrics_after, *(_size(session.tree)))
        if not session.history and session.metrics_after is None:
            after = Side(None, None, None)
        pending = MEASURING if self.busy() else "—"
        self.results.show_rows(
            metric_rows(before, after, pending),
            caption(session.metrics_before, session.metrics_after, pending == MEASURING),
        )

    def _draw_sweep(self) -> None:
        points = self.session.sweep_points if self.session is not None else []
        self.sweep_line.setData([p[0] for p in points], [p[1] for p in points])

    def _selected_name(self) -> str | None:
        index = self.tree.currentIndex()
        return self.proxy.mapToSource(index.siblingAtColumn(0)).data(NAME_ROLE) if index.isValid() else None

    def _show_selected(self, index) -> None:
        name = self.proxy.mapToSource(index.siblingAtColumn(0)).data(NAME_ROLE)
        group = self.tree_model.group_of(name) if name else None
        scores = self.session.scores if self.session is not None else None
        blocks = scores.blocks if scores is not None else {}
        if name in blocks:
            self.heatmap.show_note(f"block {name}: score {blocks[name]:.4g} (the bar on its tree row)")
            return
        if group is None and blocks and not scores.groups:
            self.heatmap.show_note(BLOCK_SCORES_NOTE)
            return
        if group is None:
            self.heatmap.show_note(f"{name}: no channel group of its own; select a layer inside it")
            return
        self._show_group(group)

    def _show_group(self, group: str) -> None:
        session = self.session
        scores = session.scores if session is not None else None
        values = scores.groups.get(group) if scores is not None else None
        planned = session.plan.groups.get(group) if session is not None and session.plan is not None else None
        removed = planned.removed if planned is not None else ()
        self.heatmap.show_group(group, None if values is None else values.numpy(), removed, **self._why_empty())

    def _why_empty(self) -> dict[str, Any]:
        """Why a heatmap may have nothing to draw: scores to pick from, or a step that dropped them with the model."""
        session = self.session
        if session is None:
            return {}
        changed_by = session.history[-1].method if session.history else ""
        return {"scored": session.scores is not None, "changed_by": changed_by}

    def select_group(self, group: str) -> None:
        """An overview row was clicked: select the group's root layer in the tree and show its heatmap."""
        self.select_layer(group)
        self._show_group(group)

    # --- opening ---------------------------------------------------------------------------

    def open(self, model_spec: str | ModelRequest, data_spec: str | None = "demo") -> None:
        """Load a model (and data) and trace its tree in the background, then show it; a failure keeps the old one."""
        request = model_spec if isinstance(model_spec, ModelRequest) else ModelRequest(model_spec, data_spec)
        if not self.confirm_discard("opening another model", lambda: self.open(request)):
            return
        device = torch.device(self.device_picker.currentText())
        self._run(
            "open",
            lambda progress: self._with_rows(open_session(request, device, progress)),
            lambda s: self._adopt(request.label(), s, request),
        )

    def _with_rows(self, session: Session) -> Session:
        self._prebuild_rows(session)
        return session

    def _adopt(self, spec: str, session: Session, request: ModelRequest | None = None) -> None:
        """Show a newly opened session; whatever belonged to the previous model is gone with it."""
        previous = self.session
        had = previous is not None and (
            previous.scores is not None or previous.plan is not None or previous.metrics_after is not None
        )
        if previous is not None:
            previous.events.model.disconnect(self._model_replaced)
        self.session = session
        self._plan_error = ""
        session.events.model.connect(self._model_replaced)
        session.select_method(self.panel.method().id)
        self.bridge.follow(session)
        self.setWindowTitle(f"Secateur: {spec}" + (f" on {session.data.spec}" if session.data else ""))
        self._saved_model = session.model
        if request is None or request.weights is None:
            self._remember(request.model if request else spec)
        if had:
            self.statusBar().showMessage(
                f"opened {spec}: the previous model's scores, plan, heatmaps and results were cleared", 10000
            )

    def ask_model(self) -> None:
        """File → Open model: the dialog checks the SPEC as the CLI does; files are read on the worker."""
        dialog = OpenModelDialog(self.session.data.spec if self.session and self.session.data else "demo", self)
        dialog.setObjectName("open-model")
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.open(dialog.request()))
        dialog.open()

    def ask_data(self) -> None:
        current = self.session.data.spec if self.session and self.session.data else "demo"
        spec, ok = QInputDialog.getText(
            self, "Open data", f"Data SPEC: demo (the embedded shapes), or one of\n{DATA_LAYOUTS}", text=current
        )
        if ok and spec and self.session is not None:
            self.open(self.session.loaded.label, spec)

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
            self.session.set_device(torch.device(name))

    def _method_changed(self, method_id: str) -> None:
        self._plan_error = ""
        self._show_centre()
        if self.session is not None:
            self.session.select_method(method_id)
        self._update_controls()

    # --- scoring and planning --------------------------------------------------------------

    def run_method(self) -> None:
        if self.session is None:
            self.show_error("Open a model first.")
            return
        try:
            method, params = self.panel.method(), self.panel.params()
        except InputError as error:
            self.panel.error.setText(str(error))
            return
        session, target, options = self.session, self.panel.target(), self.panel.options()
        self._plan_error = ""

        def job(progress: Progress) -> str:
            session.score(method, params, progress)
            return _plan_or_error(session, target, options, method.id, progress)

        self._run(f"score with {method.id}", job, self._planned)

    def preview_plan(self) -> None:
        """Make the plan for the current target on a worker (quietly); after a running job when one runs."""
        session = self.session
        if session is None or session.scored is None:
            return
        if self.job is not None:
            self._preview_pending = True
            return
        target, options, method = self.panel.target(), self.panel.options(), self.panel.method().id
        # a latency target times candidate models (seconds): a job of its own, with progress and Cancel
        timed = target.kind == "latency"
        name = "plan for latency" if timed else "plan preview"
        if timed:  # seconds of timing ahead: the previous target's refusal must not stay on screen meanwhile
            self._plan_error = ""
            self._draw_plan()
        job = Job(name, lambda progress: _plan_or_error(session, target, options, method, progress), quiet=not timed)
        self._start(job, self._planned)

    def _planned(self, error: str) -> None:
        self._plan_error = error
        self._draw_plan(heatmap=False)  # the plan's own change has drawn the heatmap's outline
        plan = self.session.plan if self.session is not None else None
        if error:
            self.statusBar().showMessage(f"no plan: {error}", 10000)
        elif plan is not None:
            self.statusBar().showMessage(self.panel.plan_info.text(), 10000)

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

    # --- per-group locks and overrides (the session keeps them; the next plan honours them) -------

    def set_locked(self, group: str, locked: bool) -> None:
        if self.session is not None:
            self.session.set_locked(group, locked)
            self.preview_plan()

    def set_override(self, group: str, ratio: float | None) -> None:
        if self.session is not None:
            self.session.set_override(group, ratio)
            self.preview_plan()

    def ask_override(self, group: str) -> None:
        """Ask for the fraction of the group's channels to remove (as the CLI's --override GROUP=RATIO)."""
        if self.session is None:
            return
        current = self.session.overrides.get(group, self.panel.target_value.value())
        ratio, ok = QInputDialog.getDouble(
            self, "Prune ratio", f"Fraction of group {group}'s channels to remove (0 keeps them all):",
            current, 0.0, 0.99, 2,
        )  # fmt: skip
        if ok:
            self.set_override(group, ratio)

    # --- applying, undo, sweep, fine-tuning, measuring, saving --------------------------------

    def apply_plan(self) -> None:
        session = self.session
        if session is None or session.plan is None:
            self.statusBar().showMessage("no plan to apply: run a method first", 5000)
            return
        method, params, recalibrate = self.panel.method(), self.panel.params(), self.panel.recalibrate.isChecked()
        self.tabs.setCurrentWidget(self.results)
        self._run("apply", lambda progress: session.apply(method, params, progress, recalibrate))

    def undo(self) -> None:
        session = self.session
        if session is not None:
            self._run("undo", lambda progress: session.undo())

    def sweep(self) -> None:
        session = self.session
        if session is None or session.scored is None or not session.scored.scores.groups:
            self.show_error("Run a channel method first: the sweep prunes by its scores.")
            return
        options = self.panel.options()
        self.tabs.setCurrentWidget(self.curve)
        self._run("sweep", lambda progress: session.sweep(SWEEP_RATIOS, options, progress))

    def measure_again(self) -> None:
        session = self.session
        if session is not None:
            self._run("measure", lambda progress: session.measure_again(progress))

    def recalibrate(self) -> None:
        session = self.session
        if session is not None:
            self.tabs.setCurrentWidget(self.results)
            self._run("recalibrate BatchNorm", lambda progress: session.recalibrate(progress))

    def ask_finetune(self) -> None:
        if self.session is None or self.session.data is None:
            self.show_error("Open a model and a data set first.")
            return
        dialog = FinetuneDialog(self)
        dialog.setObjectName("finetune")
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.finetune(dialog.choice()))
        dialog.open()

    def finetune(self, choice: FinetuneChoice | int) -> None:
        """Fine-tune the current model as a job: a number of epochs, or everything the dialog offers."""
        session = self.session
        assert session is not None
        if isinstance(choice, int):
            choice = FinetuneChoice(FinetuneConfig(epochs=choice))
        config = choice.config

        def done(result) -> None:
            self.statusBar().showMessage(f"fine-tuned: best epoch {result.best_epoch}", 8000)

        def job(progress: Progress):
            return session.finetune(config, progress, batch_size=choice.batch_size, seed=choice.seed)

        started = self._run(f"fine-tune {config.epochs} epoch(s)", job, done)
        if started is None:
            return
        if started is self.job:  # the session starts the run's log on the worker now: its axes, before the tab shows
            self.training.show_log(TrainingLog(planned_epochs=config.epochs))  # one first paint, not two
        # the tab's first paint (9-14 ms) in a later turn of the event loop: painted at once, after this call's
        # 5 ms, the window could not answer for 21-27 ms (offscreen, 2 cores); apart, 17-20 ms
        QTimer.singleShot(TAB_SWITCH_DELAY_MS, self, functools.partial(self.tabs.setCurrentWidget, self.training))

    def cluster_command(self, processes: int, epochs: int) -> str:
        """The ``torchrun`` line that fine-tunes the current model on a cluster node (the model as saved)."""
        session = self.session
        if session is None or session.data is None:
            raise InputError("open a model and a data set first")
        if self.unsaved():
            raise InputError("save the pruned model first (File → Save checkpoint): the cluster fine-tunes that file")
        spec = parse_model_spec(self._saved_path) if session.history else session.loaded.spec
        out = Path(self._saved_path or "model.safetensors")
        words = torchrun_command(
            spec, session.data.spec, out.with_name(f"{out.stem}-finetuned.safetensors"),
            FinetuneConfig(epochs=epochs), session.settings, processes,
        )  # fmt: skip
        return torchrun_text(words)

    def ask_cluster_command(self) -> None:
        title = "Fine-tune on a cluster"
        processes, ok = QInputDialog.getInt(self, title, "Processes per node:", 8, 1, 1024)
        if not ok:
            return
        epochs, ok = QInputDialog.getInt(self, title, "Epochs:", 10, 1, 1000)
        if not ok:
            return
        try:
            text = self.cluster_command(processes, epochs)
        except InputError as error:
            self.show_error(str(error))
            return
        QGuiApplication.clipboard().setText(text)
        QMessageBox.information(self, title, f"Copied to the clipboard:\n\n{text}")

    def ask_save(self) -> None:
        if self.session is None:
            return
        path = self._ask_checkpoint_path()
        if path:
            self.save(path)

    def _ask_checkpoint_path(self) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save checkpoint", "pruned.safetensors", "Checkpoints (*.safetensors)"
        )
        return path

    def save(self, path: str, then: Callable[[], None] | None = None) -> None:
        """Save the current model as a checkpoint (a job); ``then`` runs once it is written."""
        session = self.session
        assert session is not None
        model = session.model

        def saved(_: object) -> None:
            self._saved_model, self._saved_path = model, path
            if then is not None:
                then()

        self._run("save", lambda progress: session.save(path), saved)

    def unsaved(self) -> bool:
        """Whether the current model is a pruned (or fine-tuned) one that has not been saved."""
        session = self.session
        return session is not None and bool(session.history) and session.model is not self._saved_model

    def confirm_discard(self, doing: str, then: Callable[[], None]) -> bool:
        """True to go on now; with an unsaved pruned model ask first (Save runs ``then`` once saved)."""
        if not self.confirm_unsaved or not self.unsaved():
            return True
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(
            self,
            "Unsaved pruned model",
            f"The pruned model has not been saved. Save it before {doing}?",
            buttons.Save | buttons.Discard | buttons.Cancel,
            buttons.Save,
        )
        if answer == buttons.Discard:
            return True
        if answer == buttons.Save:
            path = self._ask_checkpoint_path()
            if path:
                self.save(path, then)
        return False

    def ask_export(self, file_format: str) -> None:
        if self.session is None:
            return
        suffix = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}[file_format]
        path, _ = QFileDialog.getSaveFileName(self, f"Export {file_format}", f"model{suffix}")
        if path:
            session = self.session
            self._run("export", lambda progress: session.export(file_format, path))

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

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.docks.pending:
            self.docks.size_by_share()

    def closeEvent(self, event) -> None:
        if not self.confirm_discard("quitting", self.close):
            event.ignore()
            return
        if self.job is not None:
            self.job.cancel()
        self._queued = None
        QThreadPool.globalInstance().waitForDone(60_000)
        self.bridge.follow(None)
        self.docks.save()
        super().closeEvent(event)


def _plan_or_error(
    session: Session, target: Target, options: PlanOptions, method: str, progress: Progress = SILENT
) -> str:
    """Make the plan (on the worker); an unreachable target is a message for the panel, not a failure."""
    try:
        session.make_plan(target, options, method, progress)
    except InputError as error:
        return _in_window_terms(str(error))
    return ""


def _in_window_terms(message: str) -> str:
    """A core message that opens with a command-line flag ("--latency-reduction 0.5: …") names the setting instead."""
    flag = re.match(r"--([a-z][a-z-]*) ", message)
    return message if flag is None else flag[1].replace("-", " ") + message[flag.end() - 1 :]


def _rows_of(tree: LayerTree) -> tuple[object, ...]:
    """What the layer tree's rows show of ``tree`` (its layers and its groups' sizes), to compare two trees."""
    return tree.layers, [(group.id, group.channels, group.prunable) for group in tree.groups]


def _size(tree: LayerTree | None) -> tuple[int | None, int | None]:
    return (tree.params, tree.macs) if tree is not None else (None, None)


def grab_png(window: MainWindow, path: str | Path) -> None:
    """Render the window to a PNG (works offscreen)."""
    window.draw_now()
    window.grab().save(str(path), "PNG")
