"""Applying a plan: physical removal of channels with Torch-Pruning, on a copy of the model.

Every structural change is also written down as an edit record (plain JSON),
so a checkpoint can rebuild the pruned architecture from the base model by
replaying the edits in order. Methods that take over apply add edit kinds of
their own through ``register_edit``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateur.core.attention import HEADS_SUFFIX, head_edit_replay, replace_module
from secateur.core.blocks import block_bypass
from secateur.core.errors import InputError
from secateur.core.groups import build_dependency_graph
from secateur.core.plan import PruningPlan

EditReplayer = Callable[[nn.Module, dict[str, Any], torch.Tensor], None]
_REPLAYERS: dict[str, EditReplayer] = {}


def register_edit(kind: str, replay: EditReplayer) -> None:
    """Teach the host to replay an edit kind (for methods that take over apply)."""
    _REPLAYERS[kind] = replay


def _load_plugin_edits() -> None:
    """Import the installed plugins: a plugin registers its edit kinds when its module is imported."""
    from secateur.core.registry import load_registry

    load_registry()


def replay_edits(model: nn.Module, edits: list[dict[str, Any]], example: torch.Tensor) -> None:
    """Re-apply recorded edits to ``model`` in place, in order; unknown kinds are refused.

    A kind not yet known (a fresh process that has not imported the plugins)
    makes the host load the installed plugins once before refusing it.
    """
    for edit in edits:
        kind = edit.get("kind")
        if kind not in _REPLAYERS:
            _load_plugin_edits()
        if kind not in _REPLAYERS:
            known = ", ".join(sorted(_REPLAYERS))
            raise InputError(
                f"edit kind {kind!r} is unknown to this Secateur (known: {known}); is its plugin installed?"
            )
        _REPLAYERS[kind](model, edit, example)


def _prune_channels(model: nn.Module, edit: dict[str, Any], example: torch.Tensor) -> None:
    """Replay channel removals: one dependency graph for all the groups of the edit."""
    prune_channel_groups(model, build_dependency_graph(model, example), edit["groups"])


def prune_channel_groups(model: nn.Module, graph: tp.DependencyGraph, removed_by_group: dict[str, list[int]]) -> None:
    """Remove channels from the groups rooted at the named layers, in place, through ``graph``."""
    modules = dict(model.named_modules())
    for group_id, removed in removed_by_group.items():
        if not removed:
            continue
        if group_id not in modules:
            raise InputError(f"edit prune_channels names layer {group_id!r}, which the model does not have")
        root = modules[group_id]
        handler = graph.get_pruner_of_module(root).prune_out_channels
        graph.get_pruning_group(root, handler, idxs=list(removed)).prune()


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


register_edit("prune_channels", _prune_channels)
register_edit("remove_blocks", _remove_blocks)
register_edit("prune_heads", head_edit_replay)


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
    replay_edits(model, rest, example)
    return model.eval()


def apply_plan(model: nn.Module, plan: PruningPlan, example: torch.Tensor) -> tuple[nn.Module, list[dict[str, Any]]]:
    """A pruned copy of ``model`` and the edits that made it; ``model`` itself is left untouched."""
    pruned = copy.deepcopy(model).eval()
    edits = plan_edits(plan)
    replay_edits(pruned, edits, example.to(next(pruned.parameters()).device))
    return pruned, edits


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: list[torch.Tensor] | Any, device: torch.device, max_batches: int = 50
) -> int:
    """Re-estimate BatchNorm running statistics on data (cumulative average), without training.

    Pruning shifts the statistics that downstream BatchNorm layers expect;
    recomputing them on calibration data often recovers much of the accuracy.
    Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = {m: m.momentum for m in norms}
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    was_training = model.training
    model.train()
    used = 0
    try:
        for images, *_ in batches:
            if used >= max_batches:
                break
            model(images.to(device))
            used += 1
    finally:
        for module, momentum in saved.items():
            module.momentum = momentum
        model.train(was_training)
    return used
