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


@dataclass
class GroupInfo:
    """One dependency group: its id (the root layer's name), width and members."""

    id: str
    channels: int
    layers: list[str]
    prunable: bool
    out_layers: list[str] = field(default_factory=list)  # layers whose outputs are these channels
    handle: tp.Group | None = field(default=None, repr=False)  # Torch-Pruning's group; None when locked

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "channels": self.channels, "layers": self.layers, "prunable": self.prunable}


def build_dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's graph of ``model`` traced on ``example`` (the model is not changed).

    Tracing needs autograd, so it is enabled here even when the caller runs under ``torch.no_grad()``.
    """
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # tp warns about unwrapped parameters such as ViT's class token
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)


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
        groups.append(GroupInfo(names[root], len(group[0].idxs), members, True, out_layers, group))
    for name, module in zip(locked, locked_modules, strict=True):
        width = getattr(module, "out_features", None) or getattr(module, "out_channels", 0)
        groups.append(GroupInfo(name, int(width), [name], False, [name]))
    return groups
