"""A pruning session: the state behind the window, as plain core calls that announce every change.

The window holds one ``Session``; every button runs one of its methods on a
worker thread. The session keeps the loaded model and its layer tree, the
data, the latest scores and plan, the before/after measurements, the
fine-tuning curve, the sweep and the history of applied steps (undo returns to
the model before the last one).

Every change is announced on ``session.events`` (psygnal signals, emitted in
whichever thread made the change, so the core stays free of Qt). A view never
keeps its own copy of this state: it subscribes and redraws from the session,
so nothing on screen can be stale. Changing the method or the device clears
what no longer applies and says so on ``events.notice``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from psygnal import Signal, SignalGroup
from torch import nn

from secateur.core.common.errors import Cancelled, InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle, load_data
from secateur.core.graph.layer_tree import LayerTree
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.export import export_model
from secateur.core.model.specs import LoadedModel, parse_model_spec
from secateur.core.pruning.contract import Applied, Scored
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.methods import MethodInfo
from secateur.core.pruning.plan import PlanOptions, PruningPlan, Target
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import Metrics, accuracy_and_loss, measure_latency
from secateur.core.train.finetune import EpochRecord, FinetuneConfig, FinetuneResult, finetune
from secateur.core.workflow.pipeline import Measure, PruneStep, prune_step

LATENCY_RUNS = 30  # timed runs per latency measurement: enough for a p10–p90 spread
LATENCY_WARMUP = 5


class SessionEvents(SignalGroup):
    """What changed in a session. Handlers run in the thread that made the change; read the session's state."""

    model = Signal()  # the model and its layer tree were replaced (open, apply, fine-tune, recalibrate, undo)
    scores = Signal()  # scores changed: partial, complete or cleared
    plan = Signal()  # the plan was made or cleared
    metrics = Signal()  # the before/after measurements changed (or were cleared)
    history = Signal()  # the undo stack changed
    training = Signal()  # a fine-tuning step or epoch was recorded, or the curve was reset
    sweep = Signal()  # a sweep point arrived, or the sweep was cleared
    choices = Signal()  # the user's locked groups or per-group ratio overrides changed
    job = Signal(str)  # the running job's name; "" when none runs
    notice = Signal(str)  # a sentence for the user: what was cleared and why


@dataclass
class _Step:
    """One applied step: the model before it, its edits and measurements, and what was done."""

    model: nn.Module
    edits: list[dict[str, Any]]
    method: str
    metrics: Metrics | None
    tree: LayerTree | None


@dataclass
class TrainingLog:
    """The fine-tuning curve: loss per step and validation accuracy per epoch, as they happen."""

    steps: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)
    epochs: list[EpochRecord] = field(default_factory=list)
    steps_per_epoch: int = 0
    total_steps: int = 0  # the whole run's steps, when known (fine-tuning): the plot's x axis is fixed to it
    planned_epochs: int = 0  # known before the first step, so the plot's x axis is set once, at the start


@dataclass
class Session:
    """The model being pruned and everything computed about it so far."""

    loaded: LoadedModel
    data: DataBundle | None = None
    settings: RunSettings = field(default_factory=RunSettings)
    scored: Scored | None = None
    plan: PruningPlan | None = None
    metrics_before: Metrics | None = None  # the model as opened (the root of the history)
    metrics_after: Metrics | None = None  # the current model, once measured
    history: list[_Step] = field(default_factory=list)
    tree: LayerTree | None = None  # the current model's layer tree, traced on the worker
    scored_by: str = ""  # the method whose scores (and plan) the session holds
    training: TrainingLog = field(default_factory=TrainingLog)
    sweep_points: list[tuple[float, float]] = field(default_factory=list)
    job: str = ""
    locked: frozenset[str] = frozenset()  # group ids never pruned (the CLI's --lock)
    overrides: dict[str, float] = field(default_factory=dict)  # group id → fraction removed (--override)
    events: SessionEvents = field(default_factory=SessionEvents, repr=False, compare=False)
    _live: Scores | None = field(default=None, repr=False)  # scores arriving while a method runs
    _workspace: Workspace | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        model_spec: str,
        data_spec: str | None = None,
        device: torch.device | None = None,
        progress: Progress = SILENT,
    ) -> Session:
        """Load a model SPEC (and a data SPEC) as the CLI would, and trace its layer tree (``progress`` hears)."""
        loaded = load_model(parse_model_spec(model_spec))
        data = load_data(data_spec, input_size=loaded.input_shape[1]) if data_spec else None
        session = cls(loaded, data, RunSettings(device=device or torch.device("cpu")))
        session.trace(progress)
        return session

    def trace(self, progress: Progress = SILENT) -> LayerTree:
        """Trace the current model once, for its layer tree and for pruning it (``progress`` hears of it)."""
        self.tree = self.workspace(progress).layer_tree(self.loaded.label, progress)
        return self.tree

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return self.settings.device

    @property
    def scores(self) -> Scores | None:
        """The latest scores, partial while a method runs (the method's state stays in ``scored``)."""
        return self.scored.scores if self.scored else self._live

    @property
    def root_model(self) -> nn.Module:
        """The model as opened, before any step of the history."""
        return self.history[0].model if self.history else self.model

    # --- what the user picks --------------------------------------------------------

    def set_job(self, name: str) -> None:
        """Record the running job (the window calls this when a job starts and ends)."""
        self.job = name
        self.events.job.emit(name)

    def select_method(self, method_id: str) -> str | None:
        """Another method: another method's scores and plan no longer apply. Returns what was cleared."""
        if method_id == self.scored_by:
            return None
        previous, had = self.scored_by, self.scores is not None or self.plan is not None
        self._clear_scores()
        self.scored_by = method_id
        if not had:
            return None
        return self._notice(f"method {method_id}: {previous}'s scores, plan and heatmaps were cleared")

    def set_device(self, device: torch.device) -> str | None:
        """Another device: scores, plan and latencies measured on the old one no longer apply."""
        if device == self.device:
            return None
        had = self.scores is not None or self.plan is not None or self.metrics_after is not None
        self.settings = replace(self.settings, device=device)
        self._workspace = None
        if not had:
            return None
        self._clear_scores()
        self._set_metrics(None, None)
        return self._notice(f"device {device}: scores, plan and measurements from the previous device were cleared")

    def _notice(self, text: str) -> str:
        self.events.notice.emit(text)
        return text

    # --- the user's per-group choices ---------------------------------------------------

    def set_locked(self, group: str, locked: bool = True) -> None:
        """Lock a group (never pruned) or unlock it; the next plan honours it."""
        self._check_group(group)
        self.locked = self.locked | {group} if locked else self.locked - {group}
        self.events.choices.emit()

    def set_override(self, group: str, ratio: float | None) -> None:
        """Prune a group at its own ``ratio`` (fraction removed) instead of the target's; None clears it."""
        self._check_group(group)
        overrides = {k: v for k, v in self.overrides.items() if k != group}
        if ratio is not None:
            PlanOptions(overrides={group: ratio})  # refuses a ratio outside [0, 1) with the CLI's message
            overrides[group] = ratio
        self.overrides = overrides
        self.events.choices.emit()

    def plan_options(self, options: PlanOptions) -> PlanOptions:
        """``options`` with the session's locks and overrides added, as the CLI's --lock and --override give them."""
        locked = tuple(dict.fromkeys([*options.locked, *sorted(self.locked)]))
        return replace(options, locked=locked, overrides={**options.overrides, **self.overrides})

    def _check_group(self, group: str) -> None:
        prunable = {g.id for g in self.tree_now().groups if g.prunable}
        if group not in prunable:
            raise InputError(f"group {group!r}: not a prunable group of this model; see `secateur inspect`")

    def _keep_valid_choices(self) -> None:
        """After the model changed: drop the locks and overrides whose group it no longer has, and say so."""
        prunable = {g.id for g in self.tree.groups if g.prunable} if self.tree is not None else set()
        gone = sorted((self.locked | set(self.overrides)) - prunable)
        if not gone:
            return
        self.locked = self.locked & prunable
        self.overrides = {k: v for k, v in self.overrides.items() if k in prunable}
        self.events.choices.emit()
        self._notice(f"locks and overrides on {', '.join(gone)} were cleared: the model has no such group now")

    # --- scoring and planning ---------------------------------------------------------

    def tree_now(self) -> LayerTree:
        """The current model's layer tree (traced here if it is not known yet)."""
        if self.tree is None:
            self.trace()
        return self.tree

    def workspace(self, progress: Progress = SILENT) -> Workspace:
        """The workspace of the current model, built once per model (tracing it is the costly part).

        ``progress`` hears of the tracing and may stop it: MaxViT's groups take about a minute.
        """
        cached = self._workspace
        if cached is None or cached.model is not self.model or cached.settings != self.settings:
            cached = Workspace(self.model, self.loaded.input_shape, self.data, self.settings, progress)
            self._workspace = cached
        return cached

    def score(
        self,
        method: MethodInfo,
        params: dict[str, Any],
        progress: Progress = SILENT,
        on_partial: Callable[[Scores], None] | None = None,
    ) -> Scores:
        """Score with a method; partial scores are announced as they come, the state is kept for plan and apply."""
        self._clear_scores()
        self.scored_by = method.id
        self._live = Scores()

        def partial(scores: Scores) -> None:
            live = self._live or Scores()
            merged = Scores(dict(live.groups), dict(live.blocks))  # a new object: readers never see it change
            merged.update(scores)
            self._live = merged
            self.events.scores.emit()
            if on_partial is not None:
                on_partial(scores)

        self.training = TrainingLog()  # a method that trains (PAAM) draws its loss curve here
        self.events.training.emit()

        def loss(step: int, steps_per_epoch: int, value: float) -> None:
            self.training.steps_per_epoch = steps_per_epoch
            self.training.steps.append((step, value))
            self.events.training.emit()

        try:
            self.scored = self.workspace(progress).score(method, params, progress, partial, loss)
        finally:
            self._live = None
            self.events.scores.emit()
        return self.scored.scores

    def make_plan(
        self, target: Target, options: PlanOptions, method: str = "", progress: Progress = SILENT
    ) -> PruningPlan:
        """The plan for a target from the current scores and the session's locks and overrides.

        An unreachable target clears the plan and raises; ``progress`` reports (and can cancel) a latency
        target's timings or the building of a latency table, and a cancelled plan clears the old one too (it
        was made for another target).
        """
        if self.scored is None:
            raise InputError("run a method first: there are no scores to plan from")
        options = self.plan_options(options)
        if target.kind == "latency" and self.plan is not None:
            self._set_plan(None)  # timing takes seconds: the old target's plan must not show meanwhile
        try:
            workspace = self.workspace(progress)
            plan = workspace.plan(self.scored.scores, target, options, method or self.scored_by, progress)
        except (InputError, Cancelled):
            self._set_plan(None)
            raise
        self._set_plan(plan)
        return plan

    def _set_plan(self, plan: PruningPlan | None) -> None:
        self.plan = plan
        self.events.plan.emit()

    def _clear_scores(self) -> None:
        had_scores, had_plan = self.scores is not None, self.plan is not None
        self.scored, self._live, self.plan = None, None, None
        self.sweep_points = []
        if had_scores:
            self.events.scores.emit()
            self.events.sweep.emit()
        if had_plan:
            self.events.plan.emit()

    # --- measuring --------------------------------------------------------------------

    def _measure(self) -> Measure | None:
        return Measure(self.data, self.settings, latency_runs=LATENCY_RUNS) if self.data else None

    def evaluate(self, model: nn.Module | None = None, progress: Progress = SILENT) -> Metrics:
        measure = self._measure()
        if measure is None:
            raise InputError("open a data set first: evaluation needs one")
        return measure(model or self.model, progress)

    def _set_metrics(self, before: Metrics | None, after: Metrics | None) -> None:
        self.metrics_before, self.metrics_after = before, after
        self.events.metrics.emit()

    def _measure_current(self, progress: Progress) -> None:
        """Measure the current model (and the model as opened, once), then announce the table."""
        if self.data is None:
            return
        before = self.metrics_before or self.evaluate(self.root_model, progress)
        if self.history and self.history[0].metrics is None:
            self.history[0].metrics = before
        self._set_metrics(before, self.evaluate(self.model, progress))

    def measure_again(self, progress: Progress = SILENT) -> Metrics | None:
        """Repeat the latency measurements (warm-up first) of the model as opened and of the current one."""
        if self.metrics_before is None or self.metrics_after is None:
            self._measure_current(progress)
            return self.metrics_after
        shape = self.loaded.input_shape
        before = measure_latency(
            self.root_model, shape, self.device, warmup=LATENCY_WARMUP, runs=LATENCY_RUNS, progress=progress
        )
        after = measure_latency(
            self.model, shape, self.device, warmup=LATENCY_WARMUP, runs=LATENCY_RUNS, progress=progress
        )
        self._set_metrics(replace(self.metrics_before, latency=before), replace(self.metrics_after, latency=after))
        return self.metrics_after

    # --- changing the model -------------------------------------------------------------

    def _push(self, model: nn.Module, edits: list[dict[str, Any]], method: str, progress: Progress = SILENT) -> None:
        """Make ``model`` current; the one before goes on the undo stack. Announced at once, measured later.

        It is traced first (``progress`` hears of it), so a cancel there leaves the session as it was; that
        trace gives its tree and is kept for the next score or plan.
        """
        workspace = Workspace(model, self.loaded.input_shape, self.data, self.settings, progress)
        tree = workspace.layer_tree(self.loaded.label, progress)
        self.history.append(_Step(self.model, list(self.loaded.edits), method, self.metrics_after, self.tree))
        self.loaded = replace(self.loaded, model=model, edits=edits)
        self.tree = tree
        self._workspace = workspace
        self._clear_scores()
        self._keep_valid_choices()
        self.metrics_after = None
        self.events.model.emit()
        self.events.history.emit()
        self.events.metrics.emit()

    def _pop(self) -> _Step:
        step = self.history.pop()
        self.loaded = replace(self.loaded, model=step.model, edits=step.edits)
        self.tree = step.tree
        if self.tree is None:
            self.trace()
        self._clear_scores()
        self._keep_valid_choices()
        self.metrics_after = step.metrics
        if not self.history and step.metrics is None:
            self.metrics_before = None
        self.events.model.emit()
        self.events.history.emit()
        self.events.metrics.emit()
        return step

    def _undo_if_cancelled(self, work: Callable[[], None]) -> None:
        """Run the measurements after a step; if they are cancelled, the step is undone: nothing changed."""
        try:
            work()
        except Cancelled:
            self._pop()
            raise

    def apply(
        self,
        method: MethodInfo | None,
        params: dict[str, Any],
        progress: Progress = SILENT,
        recalibrate_bn: bool = False,
    ) -> tuple[Metrics | None, Metrics | None]:
        """Apply the current plan; the new structure is announced as soon as surgery ends, metrics when measured."""
        if self.plan is None:
            raise InputError("make a plan first (run a method, then preview the plan)")
        plan, scored, label = self.plan, self.scored, self.plan.method or self.scored_by

        def applied(result: Applied) -> None:
            self._push(result.model, [*self.loaded.edits, *result.edits], label, progress)

        root, measure = self.metrics_before, self._measure()
        self._undo_if_cancelled(
            lambda: self._finish_apply(
                prune_step(
                    self.workspace(progress),
                    plan,
                    method,
                    params,
                    scored,
                    measure,
                    recalibrate_bn,
                    progress,
                    on_applied=applied,
                    before=self.metrics_after,
                ),
                root,
            )
        )
        return self.metrics_before, self.metrics_after

    def _finish_apply(self, step: PruneStep, root: Metrics | None) -> None:
        if self.history[-1].metrics is None:
            self.history[-1].metrics = step.before
        self._set_metrics(root or step.before, step.after)

    def adopt(
        self,
        model: nn.Module,
        edits: list[dict[str, Any]],
        method: str,
        base: nn.Module,
        progress: Progress = SILENT,
    ) -> tuple[Metrics | None, Metrics | None]:
        """Make a model pruned elsewhere (a comparison's cell) current, as apply would: undoable, savable, measured.

        ``base`` is the model it was pruned from by ``edits``: the current model
        or an earlier one of this session's history, whose edits come first in
        the checkpoint. The new model goes on top of the current one, so Undo
        returns to what was shown before.
        """
        base_edits = self._edits_of(base)
        self._push(model, [*base_edits, *edits], method, progress)
        self._undo_if_cancelled(lambda: self._measure_current(progress))
        return self.metrics_before, self.metrics_after

    def _edits_of(self, model: nn.Module) -> list[dict[str, Any]]:
        """The edits that turned the architecture into ``model``, one of this session's models."""
        if model is self.model:
            return list(self.loaded.edits)
        for step in self.history:
            if step.model is model:
                return list(step.edits)
        raise InputError(
            "this result was pruned from a model that is no longer in this session "
            "(another model was opened, or its steps were undone): run the comparison again"
        )

    def finetune(
        self,
        config: FinetuneConfig,
        progress: Progress = SILENT,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> FinetuneResult:
        """Fine-tune the current model (undoable like an apply); the curve is announced step by step.

        ``batch_size`` and ``seed`` replace the session's for this run only (the CLI's --batch-size, --seed).
        """
        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size {batch_size}: must be at least 1")
        if self.data is None:
            raise InputError("open a data set first: fine-tuning needs one")
        self.training = TrainingLog(planned_epochs=config.epochs)
        self.events.training.emit()

        def step(done: int, total: int, loss: float) -> None:
            self.training.steps_per_epoch = max(1, total // max(1, config.epochs))
            self.training.total_steps = total
            self.training.steps.append((done, loss))
            self.events.training.emit()

        def epoch(record: EpochRecord) -> None:
            self.training.epochs.append(record)
            self.events.training.emit()
            if on_epoch is not None:
                on_epoch(record)

        settings = replace(
            self.settings,
            batch_size=self.settings.batch_size if batch_size is None else batch_size,
            seed=self.settings.seed if seed is None else seed,
        )
        result = finetune(self.model, self.data, config, settings, progress, on_step=step, on_epoch=epoch)
        self._push(result.model, list(self.loaded.edits), "finetune", progress)
        self._undo_if_cancelled(lambda: self._measure_current(progress))
        return result

    def recalibrate(self, progress: Progress = SILENT) -> int:
        """Re-estimate BatchNorm statistics on the calibration split (undoable); returns the batches used."""
        if self.data is None:
            raise InputError("open a data set first: BatchNorm recalibration needs calibration data")
        model = copy.deepcopy(self.model)
        loader = self.data.loader("calibration", self.settings.batch_size, num_workers=self.settings.num_workers)

        def reported():
            for index, batch in enumerate(loader):
                progress("recalibrate BatchNorm", index + 1, len(loader))
                yield batch

        batches = recalibrate_batchnorm(model, reported(), self.device)
        self._push(model.eval(), list(self.loaded.edits), "recalibrate-bn", progress)
        self._undo_if_cancelled(lambda: self._measure_current(progress))
        return batches

    def sweep(
        self,
        ratios: tuple[float, ...],
        options: PlanOptions,
        progress: Progress = SILENT,
    ) -> list[tuple[float, float]]:
        """Test accuracy after pruning at each ratio by the current scores, without fine-tuning (the sweep curve)."""
        if self.data is None:
            raise InputError("open a data set first: the sweep evaluates accuracy")
        if self.scored is None or not self.scored.scores.groups:
            raise InputError("run a channel method first: the sweep prunes by its scores")
        scores = self.scored.scores
        workspace = Workspace(self.model, self.loaded.input_shape, self.data, self.settings, progress)
        self.sweep_points = []
        self.events.sweep.emit()
        for index, ratio in enumerate(ratios):
            pruned = workspace.apply(workspace.plan(scores, Target("ratio", ratio), self.plan_options(options))).model
            accuracy, _, _ = accuracy_and_loss(pruned, self.data, "test", self.device, progress=progress)
            self.sweep_points = [*self.sweep_points, (ratio, accuracy)]
            self.events.sweep.emit()
            progress("sweep", index + 1, len(ratios))
        return self.sweep_points

    def undo(self) -> bool:
        """Return to the model before the last step; False when there is nothing to undo."""
        if not self.history:
            return False
        self._pop()
        return True

    # --- files ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        extra = {"method": self.history[-1].method if self.history else None}
        if self.metrics_after is not None:
            extra["after"] = self.metrics_after.to_dict()
        info = CheckpointInfo(self.loaded.spec, self.loaded.input_shape, self.loaded.edits, extra)
        return save_checkpoint(path, self.model, info)

    def export(self, file_format: str, path: str | Path) -> Path:
        return export_model(self.model, self.loaded.input_shape, file_format, path)
