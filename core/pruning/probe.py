"""Groups next to a group Torch-Pruning could not map are tried on a copy before they are offered.

When Torch-Pruning cannot map a layer's output channels (its index mapping
fails, or passes the flatten bound), that layer is usually inside reshapes it
does not understand, and the group that feeds the layer may be coupled to it
in the model's code. torchvision's MaxViT reshapes its attention's output by
the width of the attention's input; with the attention's own channels kept
whole, cutting the residual stream that feeds it ran through surgery and broke
the forward pass ("shape '[1, 1, 49, 358]' is invalid for input of size
25088"). So each prunable group that holds such a layer is cut by one channel
(one per block for grouped layers) on a copy that shares the model's storage;
if the copy no longer runs, the group is kept whole with the error as reason.
Models whose every group maps are not touched, and cost nothing.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from secateur.core.common.errors import first_line
from secateur.core.graph.groups import UNMAPPED, GroupInfo, Reporter
from secateur.core.pruning.sharing import shared_copy
from secateur.core.pruning.surgery import replay_core_edits


def suspects(groups: list[GroupInfo]) -> list[GroupInfo]:
    """Prunable channel groups that hold a layer whose own output group could not be mapped."""
    unmapped = {group.id for group in groups if not group.prunable and group.locked_because.startswith(UNMAPPED)}
    return [g for g in groups if g.prunable and g.kind == "channels" and unmapped & (set(g.layers) - {g.id})]


def one_cut(group: GroupInfo) -> list[int]:
    """The fewest channels the group can lose: its last, or the last of every block."""
    if group.blocks is None:
        return [group.channels - 1]
    size = group.channels // group.blocks.count
    return [block * size + size - 1 for block in range(group.blocks.count)] if size > 1 else []


def breakage(model: nn.Module, group: GroupInfo, example: torch.Tensor) -> str:
    """Why ``model`` cannot run once ``group`` loses one channel ("" when it runs, or cannot lose one)."""
    removed = one_cut(group)
    if not removed:
        return ""
    trial = shared_copy(model)  # surgery replaces the tensors it cuts: the model's own stay as they are
    try:
        replay_core_edits(trial, [{"kind": "prune_channels", "groups": {group.id: removed}}], example)
        with torch.no_grad():
            trial.eval()(example)
    except Exception as error:  # the model's code or Torch-Pruning's mapping: either way, not this group
        first = first_line(error)
        return (
            f"cutting it breaks the model ({type(error).__name__}: {first[:200]}): it feeds a layer whose own "
            "channels Torch-Pruning cannot map, and the model's code couples the two widths"
        )
    return ""


def probed(
    model: nn.Module, groups: list[GroupInfo], example: torch.Tensor, progress: Reporter | None = None
) -> list[GroupInfo]:
    """``groups`` with each suspect that breaks the model when cut locked, its reason said."""
    broken = {}
    tried = suspects(groups)
    for index, group in enumerate(tried):
        if progress is not None:
            progress("trying groups next to unmapped layers", index, len(tried))
        broken[group.id] = breakage(model, group, example)
    return [_locked(group, broken[group.id]) if broken.get(group.id) else group for group in groups]


def _locked(group: GroupInfo, reason: str) -> GroupInfo:
    """``group`` kept whole for ``reason``, which every plan repeats (the tree, traced alone, does not know it)."""
    return replace(
        group, prunable=False, handle=None, locked_because=reason, plan_note=f"group {group.id} kept whole: {reason}"
    )
