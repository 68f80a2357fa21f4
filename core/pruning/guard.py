"""The host's guard on the model a method reads: the working copy compared bit for bit with its source.

A method must not change ``context.model``. That model is the workspace's
working copy, a deep copy of the user's model, which nothing else changes
while a method scores; so after scoring the host compares every parameter
and buffer of the copy with the user's model's: names, shapes, dtypes and
bits. One pass over both models (about 0.13 s for vit_b_16's 86 M parameters
on one loaded CPU core), exact (a permutation, a write through ``.data`` or a
replaced tensor are all seen, NaNs compare equal to themselves), and no
"before" pass is needed: the source is the "before".
"""

from __future__ import annotations

import torch
from torch import nn

_SAME_WIDTH_INTEGER = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict([*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)])


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers of its width (so NaN equals NaN and -0.0 differs from 0.0)."""
    tensor = tensor.detach()
    width = _SAME_WIDTH_INTEGER.get(tensor.element_size())
    if width is None or tensor.is_complex() or tensor.is_quantized:  # rare: compared by value
        return tensor
    return tensor.view(width)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device != b.device:
        b = b.to(a.device)
    return torch.equal(_bits(a), _bits(b))


@torch.no_grad()
def changed_tensors(source: nn.Module, copy: nn.Module) -> list[str]:
    """The parameters and buffers by which ``copy`` differs from ``source``: added, removed or changed, in order."""
    before, after = _tensors(source), _tensors(copy)
    names = [*before, *(name for name in after if name not in before)]
    return [name for name in names if name not in before or name not in after or not _same(after[name], before[name])]
