"""Compare pruning methods at several targets: one finished cell at a time, resumable.

``secateur compare`` and the window's Compare tab share this module. A
``Comparison`` checks everything it can before any work (method ids, their
parameters, targets in (0, 1) and reachable for each method), then
``Comparison.cells()`` yields one finished method × target cell at a time and
writes ``DIR/compare.json`` atomically after each, so an interrupted run keeps
every finished cell and a second run with the same settings recomputes none.

Each method is scored once (scores do not depend on the target); every target
is then planned, applied and measured: accuracy right after pruning, after
BatchNorm recalibration (``recalibrate_bn``) and after fine-tuning (from the
recalibrated model when there is one), parameters, MACs and latency at each
batch size (median, p10, p90).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.common.files import write_json_atomic
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.model.specs import LoadedModel
from secateur.core.pruning.contract import Scored
from secateur.core.pruning.methods import MethodInfo
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import MACS_TOLERANCE, PlanOptions, Target
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import accuracy_and_loss, measure_latency, model_macs
from secateur.core.train.finetune import FinetuneConfig, finetune
from secateur.core.workflow.pipeline import plan_summary

COMPARE_FILE = "compare.json"
FORMAT_VERSION = 1
TARGET_KINDS = ("macs", "ratio")


def target_met(target: Target, macs_removed: float) -> bool | None:
    """Whether a cell removed its MACs target's share, within the planner's tolerance (None: not a MACs target).

    A method may override the plan (PAAM's learned threshold), removing less or more than asked;
    either way the cell does not stand at its target, and the report says so.
    """
    return abs(macs_removed - target.value) <= MACS_TOLERANCE if target.kind == "macs" else None


def missed_target(record: dict[str, Any]) -> str:
    """ "" for a cell at its target, else what its method removed instead."""
    if record.get("target_met") is not False:
        return ""
    return f"target missed: the method removed {record['reduction']['macs']:.1%} of the MACs"


def parse_targets(text: str) -> list[Target]:
    """``"macs:0.3,0.5,ratio:0.2"`` → targets; a bare number keeps the kind before it."""
    targets: list[Target] = []
    kind = ""
    for item in (part.strip() for part in text.split(",")):
        if ":" in item:
            kind, _, item = (piece.strip() for piece in item.partition(":"))
        if kind not in TARGET_KINDS:
            raise InputError(
                f"--targets {text!r}: {kind or 'a target'!r} is not a target kind; "
                f"write KIND:VALUE,VALUE... with KIND one of {', '.join(TARGET_KINDS)} (e.g. macs:0.3,0.5)"
            )
        try:
            value = float(item)
        except ValueError:
            raise InputError(f"--targets {text!r}: {item!r} is not a number") from None
        if not 0.0 < value < 1.0:
            raise InputError(f"--targets {kind}:{item}: a target must be strictly between 0 and 1")
        target = Target(kind, value)
        if target in targets:
            raise InputError(f"--targets {text!r}: {kind}:{item} is given twice")
        targets.append(target)
    return targets


def split_method_params(assignments: dict[str, str], method_ids: list[str]) -> dict[str, dict[str, str]]:
    """``{"hap.n_v": "20"}`` → ``{"hap": {"n_v": "20"}}``; the method must be one of those compared."""
    result: dict[str, dict[str, str]] = {method_id: {} for method_id in method_ids}
    for name, value in assignments.items():
        method_id, dot, param = name.rpartition(".")
        if not dot or not method_id or not param:
            raise InputError(f"--param {name}={value}: write METHOD.NAME=VALUE (e.g. hap.n_v=20)")
        if method_id not in result:
            raise InputError(f"--param {name}={value}: {method_id!r} is not among --methods ({', '.join(method_ids)})")
        result[method_id][param] = value
    return result


def target_label(target: Target | dict[str, Any]) -> str:
    """``macs:0.5``: how a target is written on the command line and in the report."""
    kind, value = (target.kind, target.value) if isinstance(target, Target) else (target["kind"], target["value"])
    return f"{kind}:{value:g}"


def cell_key(cell: dict[str, Any]) -> tuple[str, str, str, str]:
    """What makes a cell the same cell: method, its version and parameters, and the target."""
    params = json.dumps(cell["method_params"], sort_keys=True)
    return (cell["method"], cell["version"], params, target_label(cell["target"]))


def final_accuracy(cell: dict[str, Any]) -> float:
    """The accuracy a cell ends with: fine-tuned if it was, else recalibrated if it was, else pruned."""
    accuracy = cell["accuracy"]
    for stage in ("finetuned", "recalibrated", "pruned"):
        if accuracy.get(stage) is not None:
            return float(accuracy[stage])
    raise ValueError("a cell without any accuracy")


def machine() -> dict[str, Any]:
    """Where the comparison ran, for the report: latency figures mean nothing without it."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


@dataclass
class CompareRequest:
    """Everything a comparison needs, already parsed (method params as given, validated later)."""

    loaded: LoadedModel
    data: DataBundle
    methods: list[MethodInfo]
    targets: list[Target]
    out: Path
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=0))
    recalibrate_bn: bool = False
    settings: RunSettings = field(default_factory=RunSettings)
    latency_batches: tuple[int, ...] = (1, 32)
    latency_runs: int = 20
    min_stage_blocks: int = 2


@dataclass(frozen=True)
class CellResult:
    """One finished cell, where it stands in the run, and an estimate of the time left.

    ``model`` is the cell's final model (pruned, recalibrated, fine-tuned as
    asked) when it was computed in this run, so a caller can adopt it (the
    window's Compare tab loads it into the session); None for a reused cell,
    whose record's ``edits`` replay its structure onto the base model.
    """

    record: dict[str, Any]
    index: int  # 1-based
    total: int
    reused: bool
    seconds_left: float
    model: nn.Module | None = field(default=None, compare=False, repr=False)


def _options(method: MethodInfo, min_stage_blocks: int) -> PlanOptions:
    """The plan options of a method's cells: the papers' global ranking where scores compare across layers."""
    return PlanOptions(
        global_ranking=method.comparable_scores,
        raw_scores=method.comparable_scores,
        min_stage_blocks=min_stage_blocks,
    )


def _uniform_scores(workspace: Workspace, method: MethodInfo) -> Scores:
    """Equal scores of the method's granularity: enough to know how far a target can be reached."""
    if method.granularity == "block":
        return Scores(blocks={block.name: 1.0 for block in workspace.blocks if block.removable})
    return Scores(groups={group.id: torch.ones(group.channels) for group in workspace.groups if group.prunable})


class Comparison:
    """A checked comparison: construct it (all refusals happen here), then iterate ``cells()``."""

    def __init__(self, request: CompareRequest) -> None:
        self.request = request
        if not request.methods:
            raise InputError("--methods: give at least one method id")
        if not request.targets:
            raise InputError("--targets: give at least one target")
        ids = [method.id for method in request.methods]
        if len(set(ids)) != len(ids):
            raise InputError(f"--methods {','.join(ids)}: a method is given twice")
        out = request.out
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: the folder {out.parent} does not exist")
        self.params = {
            method.id: validate_params(method.params, request.params.get(method.id, {}), method.id)
            for method in request.methods
        }
        for method in request.methods:
            if ("calibration-data" in method.needs or "labels" in method.needs) and request.data is None:
                raise InputError(f"method {method.id} needs data: give --data SPEC")
        self._check_reachable()
        self.settings = self._settings()
        self.document = self._load_previous()

    # --- checks before any work ---------------------------------------------------

    def _workspace(self) -> Workspace:
        loaded = self.request.loaded
        return Workspace(loaded.model, loaded.input_shape, self.request.data, self.request.settings)

    def _check_reachable(self) -> None:
        """Refuse a target that a method cannot reach, from the layer sizes alone (no scoring)."""
        workspace = self._workspace()
        for method in self.request.methods:
            scores = _uniform_scores(workspace, method)
            if not scores.groups and not scores.blocks:
                raise InputError(f"method {method.id}: this model has nothing it can remove ({method.granularity}s)")
            options = PlanOptions(min_stage_blocks=self.request.min_stage_blocks)
            for target in self.request.targets:
                try:
                    workspace.plan(scores, target, options, method.id)
                except InputError as error:
                    raise InputError(f"--targets {target_label(target)} for method {method.id}: {error}") from None

    def _settings(self) -> dict[str, Any]:
        """What every cell depends on besides method, parameters and target: a change recomputes them all."""
        request = self.request
        return {
            "model": request.loaded.label,
            "data": request.data.spec,
            "seed": request.settings.seed,
            "device": str(request.settings.device),
            "batch_size": request.settings.batch_size,
            "recalibrate_bn": request.recalibrate_bn,
            "finetune": asdict(request.finetune),
            "latency_batches": list(request.latency_batches),
            "latency_runs": request.latency_runs,
            "min_stage_blocks": request.min_stage_blocks,
        }

    def _load_previous(self) -> dict[str, Any]:
        """The document to extend: the previous run's when its settings are these, else a fresh one."""
        path = self.path
        fresh = {
            "format": FORMAT_VERSION,
            "model": self.settings["model"],
            "data": self.settings["data"],
            "seed": self.settings["seed"],
            "machine": machine(),
            "settings": self.settings,
            "baseline": None,
            "cells": [],
        }
        self.dropped = 0
        if not path.is_file():
            return fresh
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(
                f"--out {self.request.out}: {COMPARE_FILE} cannot be read ({error}); move it away"
            ) from None
        if not isinstance(previous, dict) or previous.get("format") != FORMAT_VERSION:
            raise InputError(f"--out {self.request.out}: {COMPARE_FILE} is not a comparison this version can resume")
        if previous.get("settings") != self.settings or previous.get("machine") != fresh["machine"]:
            self.dropped = len(previous.get("cells", []))  # other settings, or latency from another machine
            return fresh
        return previous

    # --- the work ---------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.request.out / COMPARE_FILE

    def _key(self, method: MethodInfo, target: Target) -> tuple[str, str, str, str]:
        return (method.id, method.version, json.dumps(self.params[method.id], sort_keys=True), target_label(target))

    def _done(self) -> dict[tuple[str, str, str, str], dict[str, Any]]:
        """The document's cells by (method, version, parameters, target)."""
        return {cell_key(cell): cell for cell in self.document["cells"]}

    def _save(self) -> None:
        self.request.out.mkdir(exist_ok=True)
        write_json_atomic(self.path, self.document, "--out")

    def _store(self, record: dict[str, Any]) -> None:
        """Put a finished cell in the document (replacing a stale one) and write it to disk."""
        key = cell_key(record)
        self.document["cells"] = [cell for cell in self.document["cells"] if cell_key(cell) != key] + [record]
        self._save()

    def _latency(self, model: nn.Module, progress: Progress) -> dict[str, dict[str, float]]:
        request = self.request
        result = {}
        for batch in request.latency_batches:
            latency = measure_latency(
                model, request.loaded.input_shape, request.settings.device, batch, runs=request.latency_runs,
                progress=progress,
            )  # fmt: skip
            result[str(batch)] = {"median": latency.median, "p10": latency.p10, "p90": latency.p90}
        return result

    def _accuracy(self, model: nn.Module, progress: Progress) -> float:
        settings = self.request.settings
        accuracy, _, _ = accuracy_and_loss(
            model, self.request.data, "test", settings.device, settings.batch_size * 2, settings.num_workers, progress
        )
        return round(accuracy, 4)

    def _baseline(self, progress: Progress) -> dict[str, Any]:
        model = self.request.loaded.model
        input_shape = self.request.loaded.input_shape
        return {
            "accuracy": self._accuracy(model, progress),
            "params": sum(p.numel() for p in model.parameters()),
            "macs": model_macs(model, input_shape, self.request.settings.device),
            "latency_ms": self._latency(copy.deepcopy(model), progress),
        }

    def cells(self, progress: Progress = SILENT) -> Iterator[CellResult]:
        """Run every cell not already done; yield each (reused or new) as soon as it is finished.

        compare.json is written after every new cell, so stopping (Ctrl-C, or
        ``progress`` cancelling) keeps every cell yielded so far.
        """
        request = self.request
        total = len(request.methods) * len(request.targets)
        done = self._done()
        if self.document["baseline"] is None:
            self.document["baseline"] = self._baseline(progress)
            self._save()
        to_compute = sum(1 for m in request.methods for t in request.targets if self._key(m, t) not in done)
        index, computed, spent = 0, 0, 0.0
        for method in request.methods:
            scored, workspace, score_seconds = None, None, 0.0
            for target in request.targets:
                index += 1
                key = self._key(method, target)
                if key in done:
                    yield CellResult(done[key], index, total, True, _left(spent, computed, to_compute))
                    continue
                progress.check()
                started = time.perf_counter()
                if scored is None:
                    workspace = self._workspace()
                    scored = workspace.score(method, self.params[method.id], progress)
                    score_seconds = time.perf_counter() - started
                assert workspace is not None
                record, model = self._cell(workspace, method, scored, target, score_seconds, progress)
                self._store(record)
                computed += 1
                spent += time.perf_counter() - started
                yield CellResult(record, index, total, False, _left(spent, computed, to_compute), model)

    def _cell(
        self,
        workspace: Workspace,
        method: MethodInfo,
        scored: Scored,
        target: Target,
        score_seconds: float,
        progress: Progress,
    ) -> tuple[dict[str, Any], nn.Module]:
        """Plan, apply and measure one target with a method's scores: the cell's record and final model."""
        request = self.request
        timing = {"score": round(score_seconds, 3)}
        clock = time.perf_counter()
        options = _options(method, request.min_stage_blocks)
        plan = workspace.plan(scored, target, options, method.id)
        applied = workspace.apply(plan, method, self.params[method.id], scored)
        timing["apply"] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()
        model = applied.model
        accuracy: dict[str, float | None] = {"pruned": self._accuracy(model, progress), "recalibrated": None}
        if request.recalibrate_bn:
            model = copy.deepcopy(model)
            loader = request.data.loader(
                "calibration", request.settings.batch_size, num_workers=request.settings.num_workers
            )
            recalibrate_batchnorm(model, loader, request.settings.device)
            accuracy["recalibrated"] = self._accuracy(model, progress)
        timing["evaluate"] = round(time.perf_counter() - clock, 3)
        accuracy["finetuned"] = None
        history: list[dict[str, Any]] = []
        if request.finetune.epochs > 0:
            clock = time.perf_counter()
            result = finetune(model, request.data, request.finetune, request.settings, progress)
            model = result.model
            history = [asdict(record) for record in result.history]
            timing["finetune"] = round(time.perf_counter() - clock, 3)
            accuracy["finetuned"] = self._accuracy(model, progress)
        params = sum(p.numel() for p in model.parameters())
        macs = model_macs(model, request.loaded.input_shape, request.settings.device)
        baseline = self.document["baseline"]
        removed = 1.0 - macs / baseline["macs"]
        record = {
            "method": method.id,
            "package": method.package,
            "version": method.version,
            "target": target.to_dict(),
            "method_params": self.params[method.id],
            "ranking": "global" if options.global_ranking else "per-layer",
            "plan": plan_summary(applied.plan),
            "edits": list(applied.edits),  # replayed onto the base model, they rebuild the cell's structure
            "params": params,
            "macs": macs,
            "reduction": {
                "params": round(1.0 - params / baseline["params"], 4),
                "macs": round(removed, 4),
            },
            "target_met": target_met(target, removed),
            "accuracy": accuracy,
            "latency_ms": self._latency(model, progress),
            "finetune_history": history,
            "timing": timing,
            "seconds": round(sum(timing.values()), 3),
        }
        return record, model


def _left(spent: float, computed: int, to_compute: int) -> float:
    """Seconds left, from the mean time of the cells computed so far (0 before the first one)."""
    return spent / computed * (to_compute - computed) if computed else 0.0
