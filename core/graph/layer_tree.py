"""The layer tree: every module of a model with its shape, size, cost and group.

This is what ``secateur inspect`` prints and what the window's tree shows. It
is assembled from the trace a workspace makes once per model (one forward pass
for shapes and MACs, Torch-Pruning's dependency graph for the groups) and the
parameter tensors (sizes): ``Workspace.layer_tree``, so the tree's groups are
the ones the plans use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from secateur.core.graph.blocks import BlockInfo
from secateur.core.graph.groups import GroupInfo
from secateur.core.graph.macs import ModuleRecord


@dataclass
class LayerInfo:
    """One module of the model (the root excluded)."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    in_channels: int | None
    out_channels: int | None
    group: str | None
    parent: str
    is_leaf: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": list(self.output_shape) if self.output_shape else None,
            "params": self.params,
            "macs": self.macs,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "group": self.group,
            "parent": self.parent,
            "leaf": self.is_leaf,
        }


@dataclass
class LayerTree:
    """The whole model: totals, layers in module order, dependency groups, residual blocks."""

    model: str
    input_shape: tuple[int, ...]
    params: int
    macs: int
    classifier: str | None
    layers: list[LayerInfo]
    groups: list[GroupInfo]
    blocks: list[BlockInfo] = field(default_factory=list)

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "params": self.params,
            "macs": self.macs,
            "input_shape": list(self.input_shape),
            "classifier": self.classifier,
            "layers": [layer.to_dict() for layer in self.layers],
            "groups": [group.to_dict() for group in self.groups],
            "blocks": [block.to_dict() for block in self.blocks],
        }


def channels_of(module: nn.Module) -> tuple[int | None, int | None]:
    """Input and output channel counts of the layer types that have them."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.num_features, module.num_features
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        width = module.normalized_shape[-1] if isinstance(module, nn.LayerNorm) else module.num_channels
        return width, width
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim, module.embed_dim
    return None, None


def count_params(module: nn.Module) -> int:
    """Parameters of a module and its descendants, each shared tensor once."""
    return sum(parameter.numel() for parameter in module.parameters())


def find_classifier(model: nn.Module, records: dict) -> str | None:
    """The last layer whose outputs are the model's outputs (its channels are never pruned)."""
    output_shape = records[""].output_shape
    if not output_shape:
        return None
    width = output_shape[-1] if len(output_shape) == 2 else output_shape[1]
    candidates = [
        (records[name].order, name)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
        and records[name].order >= 0
        and channels_of(module)[1] == width
    ]
    return max(candidates)[1] if candidates else None


def assemble_layer_tree(
    model: nn.Module,
    input_shape: tuple[int, ...],
    model_name: str,
    records: dict[str, ModuleRecord],
    groups: list[GroupInfo],
    classifier: str | None,
    blocks: list[BlockInfo],
) -> LayerTree:
    """The layer tree from a trace already made (the workspace's: one trace serves the tree and the pruning).

    The groups are kept without Torch-Pruning's handles: a tree outlives the
    traced copy (it stays on the undo stack) and must not hold its graph.
    """
    groups = [replace(group, handle=None) for group in groups]
    group_of = {name: group.id for group in groups for name in group.out_layers}
    layers = []
    for name, module in model.named_modules():
        if not name:
            continue
        in_channels, out_channels = channels_of(module)
        record = records[name]
        layers.append(
            LayerInfo(
                name=name,
                type=type(module).__name__,
                output_shape=record.output_shape,
                params=count_params(module),
                macs=record.macs,
                in_channels=in_channels,
                out_channels=out_channels,
                group=group_of.get(name),
                parent=name.rpartition(".")[0],
                is_leaf=not any(True for _ in module.children()),
            )
        )
    return LayerTree(
        model=model_name,
        input_shape=input_shape,
        params=count_params(model),
        macs=records[""].macs,
        classifier=classifier,
        layers=layers,
        groups=groups,
        blocks=blocks,
    )
