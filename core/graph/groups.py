"""Torch-Pruning's dependency groups, as plain records for the layer tree.

A group is the set of layers whose channels must be pruned together (a conv,
its BatchNorm, the next conv's inputs, and every layer tied to them by a
residual addition or a concatenation). Secateur never traces dependencies
itself: it asks ``torch_pruning.DependencyGraph``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from secateur.core.graph.attention import ATTENTION_TYPES, HEADS_SUFFIX
from secateur.core.graph.timm_layers import timm_attention_lock


@dataclass
class GroupInfo:
    """One dependency group: its id (the root layer's name), width and members."""

    id: str
    channels: int
    layers: list[str]
    prunable: bool
    out_layers: list[str] = field(default_factory=list)  # layers whose outputs are these channels
    handle: tp.Group | None = field(default=None, repr=False)  # Torch-Pruning's group; None when locked
    locked_because: str = ""
    kind: str = "channels"  # or "heads": the units are an attention layer's heads
    plan_note: str = ""  # said in every plan: a lock the user did not ask for, on a layer they may expect pruned

    def to_dict(self) -> dict[str, object]:
        result = {
            "id": self.id,
            "channels": self.channels,
            "layers": self.layers,
            "prunable": self.prunable,
            "kind": self.kind,
        }
        if self.locked_because:
            result["locked_because"] = self.locked_because
        return result


def _attention_member(model: nn.Module, name: str | None) -> str | None:
    """The attention layer that ``name`` is, or whose projection it is; else None."""
    if name is None:
        return None
    for candidate in (name, name.rpartition(".")[0]):
        if candidate and isinstance(model.get_submodule(candidate), ATTENTION_TYPES):
            return candidate
    return None


def build_dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's graph of ``model`` traced on ``example`` (the model is not changed).

    Tracing needs autograd, so it is enabled here even when the caller runs under ``torch.no_grad()``.
    """
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # tp warns about unwrapped parameters such as ViT's class token
        # a tuple, so Torch-Pruning calls model(example) once instead of first trying model(*example)
        return tp.DependencyGraph().build_dependency(model, example_inputs=(example,))


def dependency_groups(model: nn.Module, graph: tp.DependencyGraph, locked: list[str]) -> list[GroupInfo]:
    """Every prunable group, then one locked group per layer in ``locked`` (the classifier)."""
    names = {module: name for name, module in model.named_modules()}
    locked_modules = [model.get_submodule(name) for name in locked]
    groups: list[GroupInfo] = []
    for group in graph.get_all_groups(
        ignored_layers=locked_modules, root_module_types=[nn.modules.conv._ConvNd, nn.Linear]
    ):
        root = group[0].dep.target.module
        members: list[str] = []
        out_layers: list[str] = []
        for item in group:
            module = item.dep.target.module
            name = names.get(module)
            if name is None:
                continue
            if name not in members:
                members.append(name)
            if graph.is_out_channel_pruning_fn(item.dep.handler) and name not in out_layers:
                out_layers.append(name)
        attention = [a for a in (_attention_member(model, names.get(item.dep.target.module)) for item in group) if a]
        if attention:
            reason = f"the attention embedding of {attention[0]} (its channels go by whole heads)"
            groups.append(GroupInfo(names[root], len(group[0].idxs), members, False, out_layers, None, reason))
            continue
        timm_lock = next(filter(None, (timm_attention_lock(model, name) for name in members)), "")
        if timm_lock:
            note = f"group {names[root]} kept whole: {timm_lock}"
            groups.append(GroupInfo(names[root], len(group[0].idxs), members, False, out_layers, None, timm_lock))
            groups[-1].plan_note = note
            continue
        groups.append(GroupInfo(names[root], len(group[0].idxs), members, True, out_layers, group))
    for name, module in model.named_modules():
        if isinstance(module, ATTENTION_TYPES):
            groups.append(
                GroupInfo(f"{name}{HEADS_SUFFIX}", int(module.num_heads), [name], True, [], None, "", "heads")
            )
    for name, module in zip(locked, locked_modules, strict=True):
        width = getattr(module, "out_features", None) or getattr(module, "out_channels", 0)
        groups.append(GroupInfo(name, int(width), [name], False, [name], None, "the classifier's outputs"))
    return groups
