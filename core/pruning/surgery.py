"""Applying a plan: physical removal of channels with Torch-Pruning, on a copy of the model.

Every structural change is also written down as an edit record (plain JSON),
so a checkpoint can rebuild the pruned architecture from the base model by
replaying the edits in order (``secateur.core.pruning.edits``). The edit kinds
defined here are the core's own; a method that takes over apply declares its
kinds in its ``MethodInfo``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateur.core.common.errors import InputError, WorkError, first_line
from secateur.core.graph.attention import HEADS_SUFFIX, head_edit_replay, replace_module
from secateur.core.graph.blocks import block_bypass
from secateur.core.graph.groups import build_dependency_graph, dependency_groups
from secateur.core.graph.width_attributes import sync_width_attributes, width_attributes
from secateur.core.pruning.checks import check_group
from secateur.core.pruning.contract import EditReplayer
from secateur.core.pruning.plan import GroupPlan, PruningPlan


def _prune_channels(model: nn.Module, edit: dict[str, Any], example: torch.Tensor) -> None:
    """Replay channel removals: one dependency graph for all the groups of the edit, checked before any cut.

    Plugins that take over apply and checkpoints both come through here, so
    their removals meet the same rules as the host's plans (``check_group``).
    """
    graph = build_dependency_graph(model, example)
    removals = {gid: list(removed) for gid, removed in edit["groups"].items() if removed}
    if removals and _has_block_layers(model):
        groups = {group.id: group for group in dependency_groups(model, graph, [])}
        for gid, removed in removals.items():
            group = groups.get(gid)
            if group is None or not group.prunable:
                continue
            gone = set(removed)
            problem = check_group(group, GroupPlan([i for i in range(group.channels) if i not in gone], group.channels))
            if problem:
                raise InputError(f"edit prune_channels: group {gid} (layers {', '.join(group.layers[:3])}) {problem}")
    prune_channel_groups(model, graph, removals)


def _has_block_layers(model: nn.Module) -> bool:
    """Whether a model holds any grouped conv or GroupNorm at all (the only layers with block rules)."""
    return any(
        (isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.out_channels) or isinstance(m, nn.GroupNorm)
        for m in model.modules()
    )


class SurgeryFailed(WorkError):
    """Torch-Pruning (or a head edit) failed on one group: a bug, reported with the group and layer."""

    def __init__(self, group: str, layer: str, error: Exception) -> None:
        first = first_line(error)
        self.group, self.layer = group, layer
        super().__init__(f"group {group} (layer {layer}): {type(error).__name__}: {first[:300]}")


def prune_channel_groups(model: nn.Module, graph: tp.DependencyGraph, removed_by_group: dict[str, list[int]]) -> None:
    """Remove channels from the groups rooted at the named layers, in place, through ``graph``."""
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    widths = width_attributes(model)
    for group_id, removed in removed_by_group.items():
        if not removed:
            continue
        if group_id not in modules:
            raise InputError(f"edit prune_channels names layer {group_id!r}, which the model does not have")
        root = modules[group_id]
        try:
            handler = graph.get_pruner_of_module(root).prune_out_channels
            graph.get_pruning_group(root, handler, idxs=list(removed)).prune()
        except InputError:
            raise
        except Exception as error:
            raise SurgeryFailed(group_id, _failing_layer(error, names) or group_id, error) from error
    sync_width_attributes(widths)


def _failing_layer(error: BaseException, names: dict[nn.Module, str]) -> str:
    """The layer Torch-Pruning was cutting when ``error`` was raised (its pruning functions take ``layer``)."""
    frame_layer = ""
    trace = error.__traceback__
    while trace is not None:
        layer = trace.tb_frame.f_locals.get("layer")
        if isinstance(layer, nn.Module) and layer in names:
            frame_layer = names[layer]
        trace = trace.tb_next
    return frame_layer


def block_edit(blocks: list[str]) -> dict[str, Any]:
    """The edit record of removing residual blocks, by module path, in the order they went."""
    return {"kind": "remove_blocks", "blocks": list(blocks)}


def remove_blocks(model: nn.Module, blocks: list[str]) -> None:
    """Replace each named block by its parameter-free bypass, in place (module paths stay stable)."""
    for name in blocks:
        try:
            block = model.get_submodule(name)
        except AttributeError:
            raise InputError(f"edit remove_blocks names {name!r}, which the model does not have") from None
        try:
            bypass = block_bypass(block)
        except ValueError as error:
            raise InputError(f"edit remove_blocks: {name!r}: {error}") from None
        replace_module(model, name, bypass.to(next(block.parameters(), torch.empty(0)).device))


def _remove_blocks(model: nn.Module, edit: dict[str, Any], example: torch.Tensor) -> None:
    remove_blocks(model, list(edit["blocks"]))


CORE_EDITS: dict[str, EditReplayer] = {
    "prune_channels": _prune_channels,
    "remove_blocks": _remove_blocks,
    "prune_heads": head_edit_replay,
}


def plan_edits(plan: PruningPlan) -> list[dict[str, Any]]:
    """The edit records of a plan: channel removals, then attention heads (by layer name)."""
    channels = {gid: g.removed for gid, g in plan.groups.items() if g.removed and not gid.endswith(HEADS_SUFFIX)}
    heads = {
        gid.removesuffix(HEADS_SUFFIX): g.kept
        for gid, g in plan.groups.items()
        if g.removed and gid.endswith(HEADS_SUFFIX)
    }
    edits: list[dict[str, Any]] = [{"kind": "prune_channels", "groups": channels}]
    if heads:
        edits.append({"kind": "prune_heads", "layers": heads})
    return edits


def prune_in_place(model: nn.Module, graph: tp.DependencyGraph, plan: PruningPlan, example: torch.Tensor) -> nn.Module:
    """Apply a plan to ``model`` itself, through a graph already traced on it; returns the model."""
    first, *rest = plan_edits(plan)
    prune_channel_groups(model, graph, first["groups"])
    for edit in rest:  # attention heads
        try:
            replay_core_edits(model, [edit], example)
        except InputError:
            raise
        except Exception as error:
            layers = ", ".join(edit.get("layers", {}))
            raise SurgeryFailed(f"{layers}{HEADS_SUFFIX}", layers, error) from error
    return model.eval()


def apply_plan(model: nn.Module, plan: PruningPlan, example: torch.Tensor) -> tuple[nn.Module, list[dict[str, Any]]]:
    """A pruned copy of ``model`` and the edits that made it; ``model`` itself is left untouched."""
    pruned = copy.deepcopy(model).eval()
    edits = plan_edits(plan)
    replay_core_edits(pruned, edits, example.to(next(pruned.parameters()).device))
    return pruned, edits


def replay_core_edits(model: nn.Module, edits: list[dict[str, Any]], example: torch.Tensor) -> None:
    """Replay edits of the core's own kinds, in order (plans, block removal, heads)."""
    for edit in edits:
        CORE_EDITS[edit["kind"]](model, edit, example)
