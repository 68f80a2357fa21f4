"""The prune pipeline: one implementation for ``secateur prune``, ``secateur score`` and the window.

``prune_step`` (apply, recalibrate, measure before and after) is the step the
CLI's ``run_prune`` and the window's ``Session.apply`` share; ``run_prune``
wraps it in scoring, planning, fine-tuning and saving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.specs import LoadedModel
from secateur.core.pruning.contract import Applied, Scored
from secateur.core.pruning.methods import MethodInfo
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import PlanOptions, PruningPlan, Target
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import Metrics, evaluate
from secateur.core.train.finetune import FinetuneConfig, finetune


@dataclass(frozen=True)
class Measure:
    """How models are measured around a prune: data, settings and latency runs."""

    data: DataBundle
    settings: RunSettings
    latency_runs: int = 20
    latency_batch_size: int = 1

    def __call__(self, model: nn.Module, progress: Progress = SILENT) -> Metrics:
        return evaluate(
            model,
            self.data,
            device=self.settings.device,
            batch_size=self.settings.batch_size * 2,
            num_workers=self.settings.num_workers,
            latency_batch_size=self.latency_batch_size,
            latency_runs=self.latency_runs,
            progress=progress,
        )


@dataclass(frozen=True)
class PruneStep:
    """One applied plan: what apply produced and the metrics around it."""

    applied: Applied
    before: Metrics | None
    after: Metrics | None
    recalibrated_batches: int = 0


def prune_step(
    workspace: Workspace,
    plan: PruningPlan,
    method: MethodInfo | None,
    params: dict[str, Any],
    scored: Scored | None,
    measure: Measure | None = None,
    recalibrate_bn: bool = False,
    progress: Progress = SILENT,
    on_applied: Callable[[Applied], None] | None = None,
    before: Metrics | None = None,
) -> PruneStep:
    """Apply the plan, optionally recalibrate BatchNorm, then measure the model before and after.

    Surgery comes first so ``on_applied`` sees the new structure at once; the
    (slower) measurements follow. The workspace's model is never changed, so
    measuring it afterwards gives what measuring it first would. ``before``
    skips measuring the model when its metrics are already known.
    """
    applied = workspace.apply(plan, method, params, scored, progress)
    batches = 0
    if recalibrate_bn:
        if workspace.data is None:
            raise InputError("BatchNorm recalibration needs data: give --data SPEC")
        loader = workspace.data.loader("calibration", workspace.batch_size, num_workers=workspace.num_workers)
        batches = recalibrate_batchnorm(applied.model, loader, workspace.device)
    if on_applied is not None:
        on_applied(applied)
    if measure is not None and before is None:
        before = measure(workspace.model, progress)
    after = measure(applied.model, progress) if measure else None
    return PruneStep(applied, before, after, batches)


@dataclass
class PruneRequest:
    """Everything ``secateur prune`` needs, already parsed."""

    loaded: LoadedModel
    data: DataBundle
    method: MethodInfo
    params: dict[str, Any]
    target: Target
    out: Path
    options: PlanOptions = field(default_factory=PlanOptions)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=0))
    recalibrate_bn: bool = False
    settings: RunSettings = field(default_factory=RunSettings)
    latency_runs: int = 20


def run_prune(request: PruneRequest, progress: Progress = SILENT) -> dict[str, Any]:
    """Score, plan, apply, (recalibrate, fine-tune), evaluate and save; returns the report."""
    started = time.perf_counter()
    method = request.method
    params = validate_params(method.params, request.params, method.id)
    if request.out.suffix != ".safetensors":
        raise InputError(f"--out {request.out}: a checkpoint is a .safetensors file")
    if not request.out.parent.is_dir():
        raise InputError(f"--out {request.out}: the folder {request.out.parent} does not exist")
    workspace = Workspace(request.loaded.model, request.loaded.input_shape, request.data, request.settings, progress)
    scored = workspace.score(method, params, progress)
    plan = workspace.plan(scored.scores, request.target, request.options, method.id, progress)
    measure = Measure(request.data, request.settings, request.latency_runs, request.options.latency_batch_size)
    step = prune_step(workspace, plan, method, params, scored, measure, request.recalibrate_bn, progress)
    pruned = step.applied.model
    after_finetune = None
    history: list[dict[str, Any]] = []
    if request.finetune.epochs > 0:
        result = finetune(pruned, request.data, request.finetune, request.settings, progress)
        pruned = result.model
        history = [record.__dict__ for record in result.history]
        after_finetune = measure(pruned, progress)
    report = {
        "method": method.id,
        "package": method.package,
        "version": method.version,
        "params": params,
        "seed": request.settings.seed,
        "target": request.target.to_dict(),
        "device": str(request.settings.device),
        "model": request.loaded.label,
        "data": request.data.spec,
        "recalibrate_bn": request.recalibrate_bn,
        "finetune": {**request.finetune.__dict__, "history": history},
        "before": step.before.to_dict() if step.before else None,
        "after": step.after.to_dict() if step.after else None,
        "after_finetune": after_finetune.to_dict() if after_finetune else None,
        "plan": plan_summary(step.applied.plan),
        "checkpoint": str(request.out),
    }
    info = CheckpointInfo(
        base=request.loaded.spec,
        input_shape=request.loaded.input_shape,
        edits=[*request.loaded.edits, *step.applied.edits],
        extra={
            key: report[key]
            for key in ("method", "package", "version", "params", "seed", "target", "before", "after", "after_finetune")
        },
    )
    save_checkpoint(request.out, pruned, info)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def plan_summary(plan: PruningPlan) -> dict[str, Any]:
    """The plan as the report's contract has it: kept/total per group, blocks removed."""
    return {
        "groups": {gid: {"kept": len(g.kept), "total": g.total} for gid, g in plan.groups.items()},
        "blocks_removed": list(plan.blocks_removed),
        "predicted_params": plan.predicted_params,
        "predicted_macs": plan.predicted_macs,
        "notes": list(plan.notes),
    }


def run_score(
    loaded: LoadedModel,
    data: DataBundle | None,
    method: MethodInfo,
    params: dict[str, Any],
    settings: RunSettings,
    progress: Progress = SILENT,
) -> tuple[Scored, dict[str, Any]]:
    """A method's scores for every group (or block), and the JSON document ``secateur score`` writes."""
    workspace = Workspace(loaded.model, loaded.input_shape, data, settings, progress)
    values = validate_params(method.params, params, method.id)
    scored = workspace.score(method, values, progress)
    document = {
        "method": method.id,
        "package": method.package,
        "version": method.version,
        "params": values,
        "seed": settings.seed,
        "model": loaded.label,
        "data": data.spec if data else None,
        "granularity": method.granularity,
        **scored.scores.to_dict(),
    }
    return scored, document
