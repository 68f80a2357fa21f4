"""Module attributes that repeat a parameter's width, kept equal to it through surgery.

Torch-Pruning cuts a module's own 1-D parameters even when it does not know the
module (as unwrapped parameters), but not the plain attributes that repeat their
width: timm's metaformer ``Scale`` holds ``scale`` of C entries and
``shape == (C, 1, 1)``, and its forward reads ``scale.view(self.shape)``, so a
cut ``scale`` no longer fits the stale ``shape``. Such attributes are found
before the cut and set to the new width after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch_pruning import ops

# Layers whose own pruners keep their attributes; their tuples (a Conv1d's ``kernel_size == (3,)`` beside a
# bias of 3) are not widths.
KNOWN_LAYERS = (
    ops.TORCH_CONV, ops.TORCH_BATCHNORM, ops.TORCH_LAYERNORM, ops.TORCH_GROUPNORM, ops.TORCH_INSTANCENORM,
    ops.TORCH_PRELU, ops.TORCH_LINEAR, ops.TORCH_EMBED, ops.TORCH_LSTM, nn.MultiheadAttention,
)  # fmt: skip


@dataclass(frozen=True)
class WidthAttribute:
    """``module.attribute[position]`` repeats the length of ``module.parameter`` (1-D)."""

    module: nn.Module
    attribute: str
    parameter: str
    position: int


def _width_position(value: object, width: int) -> int | None:
    """Where ``width`` sits in a shape-like tuple whose other entries are all 1; None if it is not one."""
    if width == 1 or not isinstance(value, tuple) or not all(type(entry) is int for entry in value):
        return None
    others = [i for i, entry in enumerate(value) if entry != 1]
    return others[0] if len(others) == 1 and value[others[0]] == width else None


def width_attributes(model: nn.Module) -> list[WidthAttribute]:
    """Every shape-like tuple attribute of a module whose one non-1 entry is the length of its own 1-D parameter.

    Only modules Torch-Pruning does not know: it cuts their parameters as bare tensors.
    """
    found: list[WidthAttribute] = []
    for module in model.modules():
        if isinstance(module, KNOWN_LAYERS):
            continue
        vectors = {name: p.numel() for name, p in module.named_parameters(recurse=False) if p.dim() == 1}
        if not vectors:
            continue
        for attribute, value in vars(module).items():
            if attribute.startswith("_"):
                continue
            for parameter, width in vectors.items():
                position = _width_position(value, width)
                if position is not None:
                    found.append(WidthAttribute(module, attribute, parameter, position))
                    break
    return found


def sync_width_attributes(found: list[WidthAttribute]) -> None:
    """Set each found attribute's width entry to its parameter's length now (after a cut)."""
    for item in found:
        value = getattr(item.module, item.attribute)
        width = getattr(item.module, item.parameter).numel()
        if value[item.position] != width:
            setattr(item.module, item.attribute, (*value[: item.position], width, *value[item.position + 1 :]))
