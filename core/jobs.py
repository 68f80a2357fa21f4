"""Whole pipeline runs, as the CLI's ``prune`` and ``score`` (and the window) call them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secateur.core.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.data import DataBundle
from secateur.core.errors import InputError
from secateur.core.evaluate import Metrics, evaluate
from secateur.core.finetune import FinetuneConfig, finetune
from secateur.core.methods import MethodInfo
from secateur.core.models import LoadedModel
from secateur.core.params import validate_params
from secateur.core.plan import PlanOptions, PruningPlan, Target, record_removed_blocks
from secateur.core.progress import SILENT, Progress
from secateur.core.registry import Registry
from secateur.core.scoring import Scores
from secateur.core.surgery import recalibrate_batchnorm
from secateur.core.workspace import Workspace


def find_method(registry: Registry, method_id: str) -> MethodInfo:
    """The installed method ``method_id``, or a message listing the installed ones."""
    if method_id not in registry.methods:
        known = ", ".join(sorted(registry.methods)) or "none"
        raise InputError(f"--method {method_id!r}: no such method; installed: {known} (see `secateur methods`)")
    return registry.methods[method_id]


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
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    batch_size: int = 128
    num_workers: int = 0
    latency_runs: int = 20


def _metrics(model: torch.nn.Module, request: PruneRequest, progress: Progress) -> Metrics:
    return evaluate(
        model,
        request.data,
        device=request.device,
        batch_size=request.batch_size * 2,
        num_workers=request.num_workers,
        latency_runs=request.latency_runs,
        progress=progress,
    )


def run_prune(request: PruneRequest, progress: Progress = SILENT) -> dict[str, Any]:
    """Score, plan, apply, (recalibrate, fine-tune), evaluate and save; returns the report."""
    started = time.perf_counter()
    params = validate_params(request.method.params, request.params, request.method.id)
    if request.out.suffix != ".safetensors":
        raise InputError(f"--out {request.out}: a checkpoint is a .safetensors file")
    if not request.out.parent.is_dir():
        raise InputError(f"--out {request.out}: the folder {request.out.parent} does not exist")
    workspace = Workspace(
        request.loaded.model,
        request.loaded.input_shape,
        request.data,
        request.device,
        request.seed,
        request.batch_size,
        request.num_workers,
    )
    scores = workspace.score(request.method, params, progress)
    plan = workspace.plan(scores, request.target, request.options, request.method.id)
    before = _metrics(workspace.model, request, progress)  # after planning, so bad input fails fast
    pruned, edits = workspace.apply(plan, request.method, params)
    record_removed_blocks(plan, edits)
    if request.recalibrate_bn:
        recalibrate_batchnorm(pruned, request.data.loader("calibration", request.batch_size), request.device)
    after = _metrics(pruned, request, progress)
    after_finetune = None
    history: list[dict[str, Any]] = []
    if request.finetune.epochs > 0:
        result = finetune(pruned, request.data, request.finetune, request.device, progress)
        pruned = result.model
        history = [record.__dict__ for record in result.history]
        after_finetune = _metrics(pruned, request, progress)
    report = {
        "method": request.method.id,
        "params": params,
        "seed": request.seed,
        "target": request.target.to_dict(),
        "device": str(request.device),
        "model": request.loaded.source or request.loaded.spec.text(),
        "data": request.data.spec,
        "recalibrate_bn": request.recalibrate_bn,
        "finetune": {**request.finetune.__dict__, "history": history},
        "before": before.to_dict(),
        "after": after.to_dict(),
        "after_finetune": after_finetune.to_dict() if after_finetune else None,
        "plan": plan_summary(plan),
        "checkpoint": str(request.out),
    }
    info = CheckpointInfo(
        base=request.loaded.spec,
        input_shape=request.loaded.input_shape,
        edits=[*request.loaded.edits, *edits],
        extra={key: report[key] for key in ("method", "params", "seed", "target", "before", "after", "after_finetune")},
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
    device: torch.device,
    seed: int = 0,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: Progress = SILENT,
) -> tuple[Scores, dict[str, Any]]:
    """A method's scores for every group (or block), and the JSON document ``secateur score`` writes."""
    workspace = Workspace(loaded.model, loaded.input_shape, data, device, seed, batch_size, num_workers)
    values = validate_params(method.params, params, method.id)
    scores = workspace.score(method, values, progress)
    document = {
        "method": method.id,
        "params": values,
        "seed": seed,
        "model": loaded.source or loaded.spec.text(),
        "data": data.spec if data else None,
        "granularity": method.granularity,
        **scores.to_dict(),
    }
    return scores, document
