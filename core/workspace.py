"""The workspace: one model, its data and device, and the pipeline steps over them.

``score`` → ``plan`` → ``apply`` is what ``secateur prune`` and the window's
Run/Apply buttons call. The workspace's model is never modified: scoring reads
it, apply works on a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateur.core.blocks import residual_blocks
from secateur.core.data import DataBundle
from secateur.core.errors import InputError, WorkError
from secateur.core.groups import GroupInfo, build_dependency_graph, dependency_groups
from secateur.core.layer_tree import find_classifier
from secateur.core.macs import trace_modules
from secateur.core.methods import MethodInfo
from secateur.core.params import validate_params
from secateur.core.plan import MACS_TOLERANCE, PlanOptions, PruningPlan, Target, decide_channels, predict_size
from secateur.core.progress import SILENT, Progress
from secateur.core.scoring import Scores, ScoringContext, collect_scores
from secateur.core.surgery import apply_plan


@dataclass
class Workspace:
    """A model ready to prune: its graph, groups and per-layer MACs are computed once."""

    model: nn.Module
    input_shape: tuple[int, ...]
    data: DataBundle | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    batch_size: int = 128
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.model = self.model.eval().to(self.device)
        self.example = torch.zeros((1, *self.input_shape), device=self.device)
        records = trace_modules(self.model, self.example)
        self.layer_macs = {name: record.own_macs for name, record in records.items()}
        self.macs = records[""].macs
        self.params = sum(p.numel() for p in self.model.parameters())
        self.classifier = find_classifier(self.model, records)
        self.graph = build_dependency_graph(self.model, self.example)
        self.groups: list[GroupInfo] = dependency_groups(
            self.model, self.graph, [self.classifier] if self.classifier else []
        )
        self.blocks = residual_blocks(self.model)

    # --- scoring ----------------------------------------------------------------

    def context(
        self, progress: Progress = SILENT, on_partial: Callable[[Scores], None] | None = None
    ) -> ScoringContext:
        return ScoringContext(
            model=self.model,
            example=self.example,
            graph=self.graph,
            groups=[group for group in self.groups if group.prunable],
            blocks=self.blocks,
            data=self.data,
            device=self.device,
            seed=self.seed,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            progress=progress,
            on_partial=on_partial,
        )

    def score(
        self,
        method: MethodInfo,
        params: dict[str, Any] | None = None,
        progress: Progress = SILENT,
        on_partial: Callable[[Scores], None] | None = None,
    ) -> Scores:
        """Run a method's scoring to the end; partial scores go to ``on_partial`` as they come."""
        values = validate_params(method.params, params or {}, method.id)
        if ("calibration-data" in method.needs or "labels" in method.needs) and self.data is None:
            raise InputError(f"method {method.id} needs data: give --data SPEC")
        torch.manual_seed(self.seed)
        context = self.context(progress, on_partial)
        assert method.score is not None
        return collect_scores(method.score(context, values), context, method.id)

    # --- planning -----------------------------------------------------------------

    def plan(self, scores: Scores, target: Target, options: PlanOptions | None = None, method: str = "") -> PruningPlan:
        """The plan that meets ``target``; a MACs target is found by bisection on the channel ratio."""
        options = options or PlanOptions()
        if target.kind == "ratio":
            return self._plan_at(scores, target, options, method, target.value)
        goal = target.value
        low, high = 0.0, options.max_layer_ratio
        best = self._plan_at(scores, target, options, method, high)
        reachable = 1.0 - best.predicted_macs / self.macs
        if reachable < goal - MACS_TOLERANCE:
            raise InputError(
                f"--macs-reduction {goal}: cannot be reached with these scores and limits; "
                f"the most this plan can remove is {reachable:.3f} of the MACs"
            )
        for _ in range(40):
            middle = (low + high) / 2
            candidate = self._plan_at(scores, target, options, method, middle)
            reduction = 1.0 - candidate.predicted_macs / self.macs
            if abs(reduction - goal) <= abs(1.0 - best.predicted_macs / self.macs - goal):
                best = candidate
            if abs(reduction - goal) <= MACS_TOLERANCE / 4:
                break
            if reduction < goal:
                low = middle
            else:
                high = middle
        achieved = 1.0 - best.predicted_macs / self.macs
        if abs(achieved - goal) > MACS_TOLERANCE:
            raise InputError(
                f"--macs-reduction {goal}: the nearest reachable reduction is {achieved:.3f} "
                "(channel steps are too coarse; try a smaller --round-to or another target)"
            )
        return best

    def _plan_at(self, scores: Scores, target: Target, options: PlanOptions, method: str, ratio: float) -> PruningPlan:
        plans, notes = decide_channels(self.groups, scores, ratio, options)
        params, macs = predict_size(self.model, self.graph, self.groups, plans, self.layer_macs)
        return PruningPlan(method, target, plans, [], params, macs, notes)

    # --- applying -------------------------------------------------------------------

    def apply(
        self, plan: PruningPlan, method: MethodInfo | None = None, params: dict[str, Any] | None = None
    ) -> tuple[nn.Module, list[dict[str, Any]]]:
        """A pruned copy of the model and the edit records that rebuild it.

        A method that takes over apply (fusion, implants, block removal) builds
        the result itself; its edit kinds must be registered with ``register_edit``.
        """
        if method is None or method.apply is None:
            return apply_plan(self.model, plan, self.example)
        result = method.apply(self.context(), plan, validate_params(method.params, params or {}, method.id))
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
            raise WorkError(f"method {method.id}: apply must return (model, edits), got {type(result).__name__}")
        return result[0], list(result[1])
