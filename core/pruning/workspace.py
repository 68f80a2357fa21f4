"""The workspace: one model, its data and device, and the pipeline steps over them.

``score`` → ``plan`` → ``apply`` is what ``secateur prune`` and the window's
Run/Apply buttons call. The workspace's model is never modified: scoring reads
a working copy of it, apply prunes that copy (see ``sharing``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateur.core.common.devices import moved_to
from secateur.core.common.errors import InputError, WorkError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings, UsesSettings
from secateur.core.data.loading import DataBundle
from secateur.core.graph.blocks import BlockInfo, residual_blocks
from secateur.core.graph.groups import GroupInfo, build_dependency_graph, dependency_groups
from secateur.core.graph.layer_tree import LayerTree, assemble_layer_tree, find_classifier
from secateur.core.graph.macs import ModuleRecord, finish_records, recording_modules
from secateur.core.model.specs import LoadedModel
from secateur.core.pruning.checks import check_plan, check_runs
from secateur.core.pruning.contract import Applied, Scored
from secateur.core.pruning.guard import changed_tensors, tensor_marks, written_tensors
from secateur.core.pruning.halp import latency_counts, table_reach
from secateur.core.pruning.latency import plan_for_latency
from secateur.core.pruning.latency_table import LatencyTable, Timer, load_or_build, table_key, wall_clock
from secateur.core.pruning.methods import MethodInfo
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import (
    MACS_TOLERANCE,
    PlanOptions,
    PruningPlan,
    Target,
    block_count,
    decide_channels,
    predict_size,
    predict_without_blocks,
    rank_blocks,
    snapped_steps,
    user_fixed_groups,
    with_removed_blocks,
)
from secateur.core.pruning.probe import probed
from secateur.core.pruning.registry import HOST_PACKAGE
from secateur.core.pruning.scoring import Scores, ScoringContext, collect_scores, plugin_errors
from secateur.core.pruning.sharing import shared_copy, unshare
from secateur.core.pruning.surgery import (
    CORE_EDITS,
    SurgeryFailed,
    block_edit,
    plan_edits,
    prune_in_place,
    replay_core_edits,
)


@dataclass
class _Prepared:
    """A working copy of the model with its dependency graph, groups and per-module MACs."""

    model: nn.Module
    graph: tp.DependencyGraph
    groups: list[GroupInfo]
    records: dict[str, ModuleRecord]  # per module: output shape, MACs (own and with its children)
    private: bool  # a deep copy (for a third-party method), not the user's storage shared

    @cached_property
    def own_macs(self) -> dict[str, int]:
        return {name: record.own_macs for name, record in self.records.items()}


@dataclass
class Workspace(UsesSettings):
    """A model ready to prune.

    The user's model is never modified: the workspace prepares a working copy
    and traces it once (Torch-Pruning's graph and the MACs count share one
    forward pass). Methods score the working copy; ``apply`` prunes it in
    place with that same graph and hands it over, and the next step prepares a
    fresh copy. The copy shares the user's tensors for built-in methods and is
    a private deep copy for third-party ones.
    """

    model: nn.Module
    input_shape: tuple[int, ...]
    data: DataBundle | None = None
    settings: RunSettings = field(default_factory=RunSettings)
    progress: InitVar[Progress] = SILENT  # hears of the first preparation (a minute on MaxViT) and may stop it

    def __post_init__(self, progress: Progress) -> None:
        self.model = moved_to(self.model.eval(), self.device)
        self.example = torch.zeros((1, *self.input_shape), device=self.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        self._prepared: _Prepared | None = None
        self._tables: dict[int, tuple[LatencyTable, str]] = {}
        self._prepare(progress=progress)

    def _prepare(self, private: bool = False, progress: Progress = SILENT) -> _Prepared:
        """The traced working copy, prepared now if the last one was handed over (``progress`` hears of it)."""
        if self._prepared is not None and private and not self._prepared.private:
            self._prepared = None  # a third-party method never reads the user's own storage
        if self._prepared is None:
            work = copy.deepcopy(self.model) if private else shared_copy(self.model)
            with recording_modules(work) as records:
                graph = build_dependency_graph(work, self.example)
            records = finish_records(work, records, self.example.shape[0])
            self.macs = records[""].macs
            self.classifier = find_classifier(work, records)
            groups = dependency_groups(work, graph, [self.classifier] if self.classifier else [], progress)
            groups = probed(work, groups, self.example, progress)
            self._prepared = _Prepared(work, graph, groups, records, private)
        return self._prepared

    def layer_tree(self, model_name: str, progress: Progress = SILENT) -> LayerTree:
        """The layer tree of the model, from the working copy's trace (no second trace of the model).

        Its groups are the ones the plans use, the probe's locks included.
        """
        prepared = self._prepare(progress=progress)
        return assemble_layer_tree(
            self.model, self.input_shape, model_name, prepared.records, prepared.groups, self.classifier, self.blocks
        )

    def prepared(self) -> bool:
        """Whether the working copy is traced and ready (it is handed over by ``apply``)."""
        return self._prepared is not None

    @property
    def groups(self) -> list[GroupInfo]:
        return self._prepare().groups

    @property
    def graph(self) -> tp.DependencyGraph:
        return self._prepare().graph

    @cached_property
    def blocks(self) -> list[BlockInfo]:
        return residual_blocks(self.model)

    # --- scoring ----------------------------------------------------------------

    def context(
        self,
        progress: Progress = SILENT,
        on_partial: Callable[[Scores], None] | None = None,
        on_loss: Callable[[int, int, float], None] | None = None,
        private: bool = False,
    ) -> ScoringContext:
        """What a method reads; ``private``: its model is a deep copy, not over the user's storage."""
        prepared = self._prepare(private, progress)
        return ScoringContext(
            model=prepared.model,
            example=self.example,
            graph=prepared.graph,
            groups=[group for group in prepared.groups if group.prunable],
            find_blocks=lambda: self.blocks,
            classifier=self.classifier,
            data=self.data,
            settings=self.settings,
            progress=progress,
            on_partial=on_partial,
            on_loss=on_loss,
        )

    def score(
        self,
        method: MethodInfo,
        params: dict[str, Any] | None = None,
        progress: Progress = SILENT,
        on_partial: Callable[[Scores], None] | None = None,
        on_loss: Callable[[int, int, float], None] | None = None,
    ) -> Scored:
        """Run a method's scoring to the end; partial scores go to ``on_partial`` as they come.

        The model the method reads is compared with the user's model afterwards
        (it is a copy of it): a method that changed it fails (naming itself and
        its package), and the workspace prepares a fresh copy for the next step.
        """
        values = validate_params(method.params, params or {}, method.id)
        if ("calibration-data" in method.needs or "labels" in method.needs) and self.data is None:
            raise InputError(f"method {method.id} needs data: give --data SPEC")
        torch.manual_seed(self.seed)
        context = self.context(progress, on_partial, on_loss, private=not _built_in(method))
        marks = None if self._prepare().private else tensor_marks(context.model)
        try:
            assert method.score is not None
            with plugin_errors(method.id, "scoring"):
                stream = method.score(context, values)
            return collect_scores(stream, context, method.id)
        finally:
            self._guard(context.model, method, marks)

    def _guard(self, model: nn.Module, method: MethodInfo, marks: dict | None) -> None:
        """Fail a method that changed the model it was handed (and forget that copy)."""
        changed = changed_tensors(self.model, model) if marks is None else written_tensors(model, marks)
        if not changed:
            return
        self._prepared = None
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise WorkError(
            f"method {method.id} ({method.provider}) changed the model it was given to score ({shown}); "
            "a method must leave context.model as it is and change context.copy_model() instead. Nothing was saved."
        )

    # --- planning -----------------------------------------------------------------

    def plan(
        self,
        scores: Scores | Scored,
        target: Target,
        options: PlanOptions | None = None,
        method: str = "",
        progress: Progress = SILENT,
    ) -> PruningPlan:
        """The plan that meets ``target``; a MACs target is found by bisection on the channel ratio.

        A latency target is met by timing candidate plans (``secateur.core.pruning.latency``).
        """
        options = options or PlanOptions()
        self._prepare(progress=progress)  # after an apply, the next working copy is traced here
        if isinstance(scores, Scored):
            scores = scores.scores
        if options.latency_table:
            return self._plan_with_table(scores, target, options, method, progress)
        if target.kind == "latency":
            if scores.blocks and not scores.groups:
                raise InputError("--latency-reduction: works with channel methods; for blocks use --blocks or --ratio")
            return plan_for_latency(
                self.model,
                self.example,
                lambda ratio: self._plan_at(scores, target, options, method, ratio),
                target,
                options.max_layer_ratio,
                options.latency_batch_size,
                progress,
                options.latency_rounds,
            )
        if target.kind == "blocks" or (scores.blocks and not scores.groups):
            return self._plan_blocks(scores, target, options, method)
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
        if abs(achieved - goal) > MACS_TOLERANCE and options.snap_widths:
            best = self._fill_snapped(
                scores, target, options, method, self._plan_at(scores, target, options, method, low)
            )
            achieved = 1.0 - best.predicted_macs / self.macs
        if abs(achieved - goal) > MACS_TOLERANCE:
            raise InputError(
                f"--macs-reduction {goal}: the nearest reachable reduction is {achieved:.3f} "
                "(channel steps are too coarse; try a smaller --round-to, no --latency-table, or another target)"
            )
        return best

    def latency_table(
        self, batch_size: int = 1, progress: Progress = SILENT, folder: Path | None = None, timer: Timer = wall_clock
    ) -> tuple[LatencyTable, str]:
        """The latency table of this model on this device at ``batch_size`` (cached on disk), and how it was had."""
        if batch_size not in self._tables:
            prepared = self._prepare()
            key = table_key(self.model, self.input_shape, self.device, batch_size)
            batch = torch.randn((batch_size, *self.input_shape), generator=torch.Generator().manual_seed(0))
            self._tables[batch_size] = load_or_build(
                prepared.model, prepared.graph, prepared.groups, batch.to(self.device), key, progress, folder, timer
            )
        return self._tables[batch_size]

    def _plan_with_table(
        self, scores: Scores, target: Target, options: PlanOptions, method: str, progress: Progress
    ) -> PruningPlan:
        """Channel counts snapped to the table's step-down widths; a latency target met by the HALP knapsack.

        The table predicts; the target is met by measurement: the knapsack's own
        goal is corrected until the pruned model's measured reduction is within
        ±3 points (the demo's table predicted 33.7% at a plan measured at 25–29%).
        """
        if target.kind == "blocks" or (scores.blocks and not scores.groups):
            raise InputError("--latency-table: works with channel methods; for blocks use --blocks or --ratio alone")
        table, note = self.latency_table(options.latency_batch_size, progress)
        options = replace(options, snap_widths=table.snap_widths())
        if target.kind != "latency":
            return self.plan(scores, target, replace(options, latency_table=False), method).with_notes(note)
        prepared = self._prepare()
        free = [group for group in prepared.groups if group.id in table.groups and group.id in scores.groups]
        fixed = user_fixed_groups(prepared.groups, options)
        free = [group for group in free if group.id not in fixed]
        group_macs = {group.id: sum(prepared.own_macs.get(name, 0) for name in group.layers) for group in free}
        untimed = [g.id for g in prepared.groups if g.prunable and g.id in scores.groups and g.id not in table.groups]

        def knapsack_plan(goal: float) -> PruningPlan:
            counts, reduction = latency_counts(free, scores, table, goal, options, group_macs, goal == target.value)
            plans, notes = decide_channels(prepared.groups, scores, 0.0, options, counts)
            params, macs = predict_size(prepared.model, prepared.graph, prepared.groups, plans, prepared.own_macs)
            halp = (
                f"HALP knapsack on the latency table (batch {options.latency_batch_size}, {self.device}) aiming at "
                f"{goal:.3f}: predicted {table.base_ms:.2f} → {table.predict(counts):.2f} ms ({reduction:.1%} less)"
            )
            if untimed:
                more = " ..." * (len(untimed) > 4)
                notes.append(f"not in the latency table, kept whole: {', '.join(untimed[:4])}{more}")
            return PruningPlan(method, target, plans, [], params, macs, [*notes, note, halp], options)

        return plan_for_latency(
            self.model,
            self.example,
            knapsack_plan,
            target,
            max(table_reach(free, table, options), target.value),
            options.latency_batch_size,
            progress,
            options.latency_rounds,
            start=target.value,
            knob="table goal",
        )

    def _plan_blocks(self, scores: Scores, target: Target, options: PlanOptions, method: str) -> PruningPlan:
        """Remove the least important blocks: a count, a fraction of the scored ones, or until a MACs reduction."""
        if not scores.blocks:
            raise InputError(f"--blocks: method {method or '(unnamed)'} scores channels, not residual blocks")
        prepared = self._prepare()
        order, notes = rank_blocks(self.blocks, scores, options)

        def plan_of(count: int) -> PruningPlan:
            removed = order[:count]
            params, macs = predict_without_blocks(prepared.model, removed, prepared.own_macs, self.macs)
            return PruningPlan(method, target, {}, removed, params, macs, notes, options)

        if target.kind != "macs":
            return plan_of(block_count(target, order, len(scores.blocks), options))
        for count in range(1, len(order) + 1):
            candidate = plan_of(count)
            if 1.0 - candidate.predicted_macs / self.macs >= target.value - MACS_TOLERANCE:
                return candidate
        reachable = 1.0 - plan_of(len(order)).predicted_macs / self.macs
        raise InputError(
            f"--macs-reduction {target.value}: removing every removable block saves only {reachable:.3f} of the MACs"
        )

    def _plan_at(
        self,
        scores: Scores,
        target: Target,
        options: PlanOptions,
        method: str,
        ratio: float,
        counts: dict[str, int] | None = None,
    ) -> PruningPlan:
        prepared = self._prepare()
        plans, notes = decide_channels(prepared.groups, scores, ratio, options, counts)
        params, macs = predict_size(prepared.model, prepared.graph, prepared.groups, plans, prepared.own_macs)
        return PruningPlan(method, target, plans, [], params, macs, notes, options)

    def _fill_snapped(
        self, scores: Scores, target: Target, options: PlanOptions, method: str, plan: PruningPlan
    ) -> PruningPlan:
        """From ``plan`` (short of the MACs target), step single groups down one snapped width until it is met.

        Snapped to the latency table's widths, one ratio for all groups moves
        the MACs in jumps (resnet50: 0.475, then past 0.52, for a 0.5 target).
        Each step takes the group whose next width loses the least score per
        channel and does not overshoot the target's tolerance.
        """
        goal, start = target.value, 1.0 - plan.predicted_macs / self.macs
        counts = {group_id: len(group.kept) for group_id, group in plan.groups.items()}
        stepped: set[str] = set()
        while 1.0 - plan.predicted_macs / self.macs < goal - MACS_TOLERANCE / 4:
            for _, group_id, width in snapped_steps(self._prepare().groups, scores, counts, options):
                trial = {**counts, group_id: width}
                candidate = self._plan_at(scores, target, options, method, 0.0, trial)
                if 1.0 - candidate.predicted_macs / self.macs <= goal + MACS_TOLERANCE:
                    counts, plan = trial, candidate
                    stepped.add(group_id)
                    break
            else:
                break  # every remaining step overshoots: the caller reports the nearest reduction
        reached = 1.0 - plan.predicted_macs / self.macs
        return plan.with_notes(
            f"--macs-reduction {goal}: one ratio snapped to the latency table's widths reached {start:.3f}; "
            f"{len(stepped)} groups stepped down a width each (least score lost first) to reach {reached:.3f}"
        )

    # --- applying -------------------------------------------------------------------

    def apply(
        self,
        plan: PruningPlan,
        method: MethodInfo | None = None,
        params: dict[str, Any] | None = None,
        scored: Scored | None = None,
        progress: Progress = SILENT,
    ) -> Applied:
        """A pruned copy of the model, the edit records that rebuild it and the effective plan.

        A method that takes over apply (fusion, implants, block removal) builds
        the result itself from the plan and its ``Scored``; its edit kinds are
        declared in its ``MethodInfo``. Its context carries ``progress``, so a
        long apply reports and can be cancelled.
        """
        name = method.id if method is not None else plan.method
        check_plan(self._prepare(progress=progress).groups, plan)
        if method is None or method.apply is None:
            applied = self._apply_plan(plan, name)
        else:
            if scored is None:
                raise InputError(f"method {method.id} applies its own plan from its scores: score with it first")
            values = validate_params(method.params, params or {}, method.id)
            with plugin_errors(method.id, "applying"):
                result = method.apply(self.context(progress, private=not _built_in(method)), plan, values, scored)
            if not isinstance(result, Applied) or not isinstance(result.model, nn.Module):
                raise WorkError(f"method {method.id}: apply must return an Applied, got {type(result).__name__}")
            edits = tuple(_with_provider(edit, method) for edit in result.edits)
            effective = with_removed_blocks(result.plan, edits).with_notes(*result.notes)
            applied = Applied(result.model, edits, effective)
        unshare(applied.model, self.model)  # training the result must never reach the user's model
        check_runs(applied.model, self.example, applied.plan, name)
        return applied

    def _apply_plan(self, plan: PruningPlan, method: str) -> Applied:
        """The core's own apply: remove the plan's blocks, or its channels and heads with Torch-Pruning."""
        if plan.blocks_removed:
            pruned = copy.deepcopy(self.model)
            edits = [block_edit(list(plan.blocks_removed))]
            replay_core_edits(pruned, edits, self.example)
            return Applied(pruned.eval(), edits, plan)
        prepared = self._prepare()
        self._prepared = None  # the working copy becomes the result; the next step prepares another
        try:
            pruned = prune_in_place(prepared.model, prepared.graph, plan, self.example)
        except SurgeryFailed as error:
            raise WorkError(
                f"pruning with {method or 'the plan'} failed inside surgery on {error}. This is a bug in Secateur's "
                "handling of this architecture, not in the model; the model and any existing output file are "
                "untouched (rerun with --debug for the traceback)"
            ) from error
        return Applied(pruned, plan_edits(plan), plan)


def build_layer_tree(
    model: nn.Module, example: torch.Tensor, model_name: str, progress: Progress = SILENT
) -> LayerTree:
    """The layer tree of ``model`` for inputs shaped like ``example``, traced on its device.

    Traced by a workspace, as a session traces it: the groups are the ones the
    plans use (the probe's locks included). ``progress`` hears of each
    dependency group's root (MaxViT's take about a minute in all) and may stop it.
    """
    settings = RunSettings(device=example.device)
    workspace = Workspace(model, tuple(example.shape[1:]), settings=settings, progress=progress)
    return workspace.layer_tree(model_name, progress)


def tree_of(loaded: LoadedModel, device: torch.device, progress: Progress = SILENT) -> LayerTree:
    """The layer tree of a loaded model, traced on ``device`` (what ``secateur inspect`` prints)."""
    example = torch.zeros((1, *loaded.input_shape), device=device)
    return build_layer_tree(loaded.model, example, loaded.label, progress)


def _built_in(method: MethodInfo) -> bool:
    """Secateur's own methods are trusted with a working copy over the user's storage (and tested on private ones)."""
    return method.package == HOST_PACKAGE


def _with_provider(edit: dict[str, Any], method: MethodInfo) -> dict[str, Any]:
    """A plugin's edit record, signed with its method and package so a missing plugin can be named on load."""
    if edit.get("kind") in CORE_EDITS or "provider" in edit:
        return edit
    return {**edit, "provider": {"method": method.id, "package": method.package, "version": method.version}}
