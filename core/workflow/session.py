"""A pruning session: the state behind the window, as plain core calls.

The window holds one ``Session``; every button runs one of its methods on the
worker thread. The session keeps the loaded model, the data, the latest
scores and plan, and the history of applied prunes, so undo returns to the
model before the last apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle, load_data
from secateur.core.graph.layer_tree import LayerTree, tree_of
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.export import export_model
from secateur.core.model.specs import LoadedModel, parse_model_spec
from secateur.core.pruning.contract import Scored
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.methods import MethodInfo
from secateur.core.pruning.plan import PlanOptions, PruningPlan, Target
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.evaluate import Metrics, accuracy_and_loss
from secateur.core.train.finetune import FinetuneConfig, FinetuneResult, finetune
from secateur.core.workflow.pipeline import Measure, prune_step


@dataclass
class _Step:
    """One applied prune: the model before it, and what was done."""

    model: nn.Module
    edits: list[dict[str, Any]]
    method: str


@dataclass
class Session:
    """The model being pruned and everything computed about it so far."""

    loaded: LoadedModel
    data: DataBundle | None = None
    settings: RunSettings = field(default_factory=RunSettings)
    scored: Scored | None = None
    plan: PruningPlan | None = None
    metrics_before: Metrics | None = None
    metrics_after: Metrics | None = None
    history: list[_Step] = field(default_factory=list)
    _workspace: Workspace | None = field(default=None, repr=False)

    @classmethod
    def open(cls, model_spec: str, data_spec: str | None = None, device: torch.device | None = None) -> Session:
        """Load a model SPEC (and a data SPEC) as the CLI would."""
        loaded = load_model(parse_model_spec(model_spec))
        data = load_data(data_spec, input_size=loaded.input_shape[1]) if data_spec else None
        return cls(loaded, data, RunSettings(device=device or torch.device("cpu")))

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return self.settings.device

    @property
    def scores(self) -> Scores | None:
        """The latest scores (the state the method returned with them stays in ``scored``)."""
        return self.scored.scores if self.scored else None

    def tree(self) -> LayerTree:
        return tree_of(self.loaded, self.device)

    def workspace(self) -> Workspace:
        """The workspace of the current model, built once per model (tracing it is the costly part)."""
        cached = self._workspace
        if cached is None or cached.model is not self.model or cached.settings != self.settings:
            cached = Workspace(self.model, self.loaded.input_shape, self.data, self.settings)
            self._workspace = cached
        return cached

    def planning_ready(self) -> bool:
        """Whether a plan can be made without tracing the model again (cheap enough for the window's thread)."""
        cached = self._workspace
        return self.scored is not None and cached is not None and cached.model is self.model and cached.prepared()

    def score(self, method: MethodInfo, params: dict[str, Any], progress: Progress = SILENT, on_partial=None) -> Scores:
        """Score with a method; the scores and the method's state are kept for planning and apply."""
        self.scored = self.workspace().score(method, params, progress, on_partial)
        self.plan = None
        return self.scored.scores

    def make_plan(self, target: Target, options: PlanOptions, method: str = "") -> PruningPlan:
        if self.scored is None:
            raise InputError("run a method first: there are no scores to plan from")
        self.plan = self.workspace().plan(self.scored.scores, target, options, method)
        return self.plan

    def _measure(self) -> Measure | None:
        return Measure(self.data, self.settings, latency_runs=10) if self.data else None

    def evaluate(self, model: nn.Module | None = None, progress: Progress = SILENT) -> Metrics:
        measure = self._measure()
        if measure is None:
            raise InputError("open a data set first: evaluation needs one")
        return measure(model or self.model, progress)

    def apply(
        self, method: MethodInfo | None, params: dict[str, Any], progress: Progress = SILENT
    ) -> tuple[Metrics | None, Metrics | None]:
        """Apply the current plan; the model before it goes on the undo stack."""
        if self.plan is None:
            raise InputError("make a plan first (run a method, then preview the plan)")
        step = prune_step(self.workspace(), self.plan, method, params, self.scored, self._measure(), progress=progress)
        self.history.append(_Step(self.model, list(self.loaded.edits), self.plan.method))
        self.loaded = replace(self.loaded, model=step.applied.model, edits=[*self.loaded.edits, *step.applied.edits])
        self.metrics_before, self.metrics_after = step.before, step.after
        self.scored, self.plan = None, None
        return step.before, step.after

    def finetune(self, config: FinetuneConfig, progress: Progress = SILENT, on_epoch=None) -> FinetuneResult:
        """Fine-tune the current model (undoable like an apply)."""
        if self.data is None:
            raise InputError("open a data set first: fine-tuning needs one")
        result = finetune(self.model, self.data, config, self.settings, progress, on_epoch=on_epoch)
        self.history.append(_Step(self.model, list(self.loaded.edits), "finetune"))
        self.loaded = replace(self.loaded, model=result.model)
        return result

    def sweep(
        self,
        scores: Scores,
        ratios: tuple[float, ...],
        options: PlanOptions,
        progress: Progress = SILENT,
        on_point=None,
    ) -> list[tuple[float, float]]:
        """Test accuracy after pruning at each ratio by ``scores`` (no fine-tuning): the accuracy-sparsity curve."""
        if self.data is None:
            raise InputError("open a data set first: the sweep evaluates accuracy")
        workspace = Workspace(self.model, self.loaded.input_shape, self.data, self.settings)
        points: list[tuple[float, float]] = []
        for index, ratio in enumerate(ratios):
            pruned = workspace.apply(workspace.plan(scores, Target("ratio", ratio), options)).model
            accuracy, _, _ = accuracy_and_loss(pruned, self.data, "test", self.device)
            points.append((ratio, accuracy))
            progress("sweep", index + 1, len(ratios))
            if on_point is not None:
                on_point(list(points))
        return points

    def undo(self) -> bool:
        """Return to the model before the last apply; False when there is nothing to undo."""
        if not self.history:
            return False
        step = self.history.pop()
        self.loaded = replace(self.loaded, model=step.model, edits=step.edits)
        self.scored, self.plan, self.metrics_before, self.metrics_after = None, None, None, None
        return True

    def save(self, path: str | Path) -> Path:
        extra = {"method": self.history[-1].method if self.history else None}
        if self.metrics_after is not None:
            extra["after"] = self.metrics_after.to_dict()
        info = CheckpointInfo(self.loaded.spec, self.loaded.input_shape, self.loaded.edits, extra)
        return save_checkpoint(path, self.model, info)

    def export(self, file_format: str, path: str | Path) -> Path:
        return export_model(self.model, self.loaded.input_shape, file_format, path)
